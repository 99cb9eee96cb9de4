"""The generated project, run for real: `kedro run` on SequentialRunner and on
DaskRunner (a LocalCluster the runner starts), and the project's own tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import (
    DASK_RUNNER,
    ENV,
    EXAMPLE_OUTPUTS,
    data_files,
    kedro,
    render,
    render_as_is,
    run_command,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The example pipeline run once with each runner, each in its own project."""
    results = {}
    for name, options in (("sequential", []), ("dask", [f"--runner={DASK_RUNNER}"])):
        project = render(tmp_path_factory.mktemp(name))
        results[name] = (project, kedro("run", *options, cwd=project))
    return results


def test_both_runs_succeed(runs):
    for _, result in runs.values():
        assert result.returncode == 0, result.output


def test_dask_outputs_equal_sequential_outputs_byte_for_byte(runs):
    sequential = data_files(runs["sequential"][0])
    assert len(sequential) == EXAMPLE_OUTPUTS
    assert data_files(runs["dask"][0]) == sequential


def test_dask_run_shows_dashboard_progress_and_worker_logs(runs):
    output = runs["dask"][1].output
    assert "Dask dashboard: http://" in output
    assert "Completed 1 out of 13 nodes" in output
    assert "Completed 13 out of 13 nodes" in output
    assert "random_forest: best of" in output  # logged by a node on a worker
    assert "Traceback" not in output


def test_python_dash_m_uses_the_project_cli(fresh_project: Path):
    env = {**ENV, "PYTHONPATH": str(fresh_project / "src")}
    result = run_command(
        [
            sys.executable,
            "-m",
            "iris_dask",
            f"--runner={DASK_RUNNER}",
            "--runner-params=processes=False",
            "--nodes=split_data",
        ],
        fresh_project,
        env=env,
    )
    assert result.returncode == 0, result.output
    assert "Completed 1 out of 1 nodes: split_data" in result.output


def test_a_failing_node_fails_the_run_and_suggests_how_to_resume(fresh_project: Path):
    result = kedro(
        "run",
        f"--runner={DASK_RUNNER}",
        "--params=random_forest.model_options.estimator=tree",
        cwd=fresh_project,
    )
    assert result.returncode == 1
    assert "ValueError" in result.output
    assert "Unknown estimator 'tree'" in result.output
    assert "random_forest.tune_model" in result.output
    assert "--from-nodes" in result.output
    assert not (fresh_project / "data/08_reporting/model_comparison.csv").exists()


def test_a_bad_setting_is_one_paragraph_and_exit_1(fresh_project: Path):
    result = kedro(
        "run",
        f"--runner={DASK_RUNNER}",
        "--params=dask_client.n_wokers=2",
        cwd=fresh_project,
    )
    assert result.returncode == 1
    assert "Error: Unknown key(s) in dask_client: n_wokers" in result.output
    assert "Traceback" not in result.output


def test_the_projects_own_tests_pass(tmp_path: Path):
    project = render_as_is(tmp_path)
    result = run_command(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        project,
        timeout=900,
    )
    assert result.returncode == 0, result.output[-8000:]
    assert " passed" in result.output
