"""What a user sees in the console of a Dask run: Kedro's own lines, the nodes'
log records in every mode, one error for a failure, and nothing Dask prints
about its own workings."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import (
    DASK_RUNNER,
    ENV,
    example_nodes,
    kedro,
    render,
    run_command,
)

#: A node's records as Kedro's console prints them, and as Dask's plain worker
#: format would (date, time, logger, level), which must not appear.
KEDRO_LOADING = re.compile(r"INFO\s+Loading data from iris ")
PLAIN_FORMAT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - \S+ - \w+ - .*", re.M)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("console"))


def _run(project: Path, *args: str, env: dict | None = None):
    (project / "info.log").unlink(missing_ok=True)
    return kedro("run", *args, cwd=project, env=env)


def _lines(text: str, pattern: str) -> int:
    return sum(1 for line in text.splitlines() if pattern in line)


def test_async_node_logs_are_forwarded_like_sync_ones(project: Path):
    _run(project, "--async")
    sequential_log = (project / "info.log").read_text()
    dask = _run(project, "--async", f"--runner={DASK_RUNNER}")
    dask_log = (project / "info.log").read_text()
    assert dask.returncode == 0, dask.output
    assert not (plain := PLAIN_FORMAT.findall(dask.output)), plain
    assert KEDRO_LOADING.search(dask.output), dask.output
    for line in ("Loading data from", "Saving data to", "Running node:"):
        assert _lines(dask_log, line) == _lines(sequential_log, line), line


CLOSING_WORKER_ERROR = """
import logging as _logging

import distributed as _distributed

_split_data = split_data


class _ErrorAtClose(_distributed.WorkerPlugin):
    def teardown(self, worker):
        for name in ("distributed.worker", "asyncio"):
            _logging.getLogger(name).error("said as the worker closes")


def split_data(data, parameters):
    _distributed.get_worker().plugins["error-at-close"] = _ErrorAtClose()
    return _split_data(data, parameters)
"""


def test_what_workers_say_as_the_cluster_closes_is_not_printed(project: Path):
    """Dask's workers, and their event loops, may log an error as they close (a
    heartbeat racing the scheduler's close, a pending task destroyed): it is not
    the run's, and a successful run prints none."""
    nodes = example_nodes(project)
    original = nodes.read_text()
    nodes.write_text(original + CLOSING_WORKER_ERROR)
    try:
        result = _run(project, "--nodes=split_data", f"--runner={DASK_RUNNER}")
    finally:
        nodes.write_text(original)
    assert result.returncode == 0, result.output
    assert "said as the worker closes" not in result.output, result.output


def test_a_failing_node_shows_kedros_error_as_sequential_does(project: Path):
    failing = "--params=random_forest.model_options.estimator=tree"
    sequential = _run(project, failing)
    result = _run(project, f"--runner={DASK_RUNNER}", failing)
    assert result.returncode == 1
    assert "random_forest.tune_model" in result.output
    assert "Compute Failed" not in result.output
    assert "Removing worker" not in result.output
    error = "Unknown estimator 'tree'"
    assert result.output.count(error) == sequential.output.count(error) == 2


def test_no_warnings_that_sequential_does_not_print(project: Path):
    # With 32 partitions the example's groupby is a P2P shuffle, which Dask's
    # scheduler announces at WARNING (with the small settings' 4 it is not).
    shuffled = "--params=simulation.partitions=32"
    sequential = _run(project, shuffled)
    dask = _run(project, f"--runner={DASK_RUNNER}", shuffled)
    assert dask.returncode == 0, dask.output
    assert "Shuffle" not in dask.output, dask.output
    assert _lines(dask.output, "WARNING") == _lines(sequential.output, "WARNING")


def test_a_nodes_warning_is_logged_as_in_a_sequential_run(tmp_path: Path):
    """Kedro's console handler turns warnings into log records on the driver; a
    worker process must too, or they miss the console and info.log."""
    project = render(tmp_path)
    nodes = example_nodes(project)
    warned = nodes.read_text() + textwrap.dedent("""
        import warnings as _warnings

        _split_data = split_data


        def split_data(data, parameters):
            _warnings.warn("a warning from the split_data node")
            return _split_data(data, parameters)
        """)
    nodes.write_text(warned)
    for runner in ("SequentialRunner", DASK_RUNNER):
        result = _run(project, "--nodes=split_data", f"--runner={runner}")
        assert result.returncode == 0, result.output
        log = (project / "info.log").read_text()
        for text in (" ".join(result.output.split()), log):
            assert "WARNING" in text and "UserWarning: a warning from the" in text


def test_a_run_that_fails_before_its_cluster_starts_shows_one_error(
    project: Path, tmp_path: Path
):
    env = {**ENV, "TMPDIR": str(tmp_path)}
    result = _run(project, f"--runner={DASK_RUNNER}", "--pipelines=nope", env=env)
    assert result.returncode == 1
    assert "FileNotFoundError" not in result.output, result.output
    assert result.output.count("Traceback") == 1, result.output
    assert not list(tmp_path.glob("kedro-dask-*")), "a temporary folder was left"


UNGUARDED = """\
from pathlib import Path

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

bootstrap_project(Path.cwd())
from iris_dask.runner import DaskRunner  # noqa: E402

with KedroSession.create() as session:
    session.run(runner=DaskRunner(), node_names=["split_data"])
"""


def test_a_script_without_a_main_guard_is_told_to_add_it(project: Path, tmp_path: Path):
    script = project / "unguarded.py"
    script.write_text(UNGUARDED)
    try:
        result = run_command(
            [sys.executable, str(script)],
            project,
            env={**ENV, "TMPDIR": str(tmp_path)},
            timeout=120,
        )
    finally:
        script.unlink()
    assert result.returncode == 1
    final = " ".join(result.output.split()[-80:])
    assert 'if __name__ == "__main__":' in final, result.output[-3000:]
    assert "unguarded.py" in final
    assert not list(tmp_path.glob("kedro-dask-*")), "a temporary folder was left"
