"""The project's `kedro run`: Kedro's options, and runners built from conf."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.project import settings
from kedro.framework.session import KedroServiceSession, KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import ParallelRunner, SequentialRunner

from {{ cookiecutter.python_package }}.cli import _instantiate_runner, cli, run
from {{ cookiecutter.python_package }}.runner import DaskRunner, DaskSetupError

from .conftest import persisted_outputs

DASK_RUNNER = "{{ cookiecutter.python_package }}.runner.DaskRunner"


def _option_spec(command) -> dict[str, tuple]:
    return {
        param.name: (
            tuple(param.opts),
            tuple(param.secondary_opts),
            getattr(param, "is_flag", False),
            param.multiple,
            param.default,
            param.type.name,
        )
        for param in command.params
    }


def test_run_keeps_every_option_of_kedro_run():
    assert _option_spec(run) == _option_spec(kedro_run)


def test_run_takes_every_option_of_kedro_run_as_an_argument():
    accepted = set(inspect.signature(run.callback).parameters)
    assert accepted == {param.name for param in kedro_run.params}


def _write_env(project: Path, env: str, dask_client: dict) -> None:
    folder = project / "conf" / env
    folder.mkdir(exist_ok=True)
    (folder / "parameters.yml").write_text(yaml.safe_dump({"dask_client": dask_client}))


def _session(project: Path, env: str | None = None, params: dict | None = None):
    bootstrap_project(project)
    return KedroSession.create(project_path=project, env=env, runtime_params=params)


@pytest.mark.parametrize(
    "env, params, runner_params, timeout",
    [
        (None, None, {}, 30),  # conf/base
        ("remote_like", None, {}, 12),  # --env
        ("remote_like", {"dask_client": {"timeout": 7}}, {}, 7),  # --params
        ("remote_like", {"dask_client": {"timeout": 7}}, {"timeout": 3}, 3),
    ],
)
def test_dask_client_precedence(project_copy, env, params, runner_params, timeout):
    _write_env(project_copy, "remote_like", {"timeout": 12})
    with _session(project_copy, env, params) as session:
        runner = _instantiate_runner(DASK_RUNNER, False, runner_params, session)
    assert isinstance(runner, DaskRunner)
    assert runner._config.timeout == timeout


@pytest.mark.parametrize("block", [["timeout", 3], "timeout: 3", 5])
def test_a_dask_client_block_that_is_not_settings_is_refused(project_copy, block):
    (project_copy / "conf" / "odd").mkdir()
    (project_copy / "conf" / "odd" / "parameters.yml").write_text(
        yaml.safe_dump({"dask_client": block})
    )
    with _session(project_copy, "odd") as session:
        with pytest.raises(DaskSetupError, match="must hold `key: value` settings"):
            _instantiate_runner(DASK_RUNNER, False, {}, session)


def test_runner_params_merge_into_nested_settings(project_copy):
    _write_env(project_copy, "sized", {"cluster_kwargs": {"n_workers": 3}})
    with _session(project_copy, "sized") as session:
        runner = _instantiate_runner(
            DASK_RUNNER, False, {"cluster_kwargs": {"processes": False}}, session
        )
    assert runner._config.cluster_kwargs == {"n_workers": 3, "processes": False}


@pytest.mark.parametrize(
    "conf, runner_params, n_workers",
    [
        ({"cluster_kwargs": {"n_workers": 3}}, {"n_workers": 2}, 2),
        ({"n_workers": 3}, {"cluster_kwargs": {"n_workers": 2}}, 2),
        ({"n_workers": 3, "cluster_kwargs": {"n_workers": 1}}, {}, 1),
    ],
)
def test_runner_params_win_in_either_form(project_copy, conf, runner_params, n_workers):
    """A LocalCluster keyword at the top level (the old docs' form) or in
    cluster_kwargs is one key; within one layer cluster_kwargs wins."""
    _write_env(project_copy, "sized", conf)
    with _session(project_copy, "sized") as session:
        runner = _instantiate_runner(DASK_RUNNER, False, runner_params, session)
    assert runner._config.cluster_kwargs == {"n_workers": n_workers}


def test_other_runners_get_nothing_from_dask_client(project_copy):
    with _session(project_copy) as session:
        sequential = _instantiate_runner(None, False, {}, session)
        parallel = _instantiate_runner(
            "ParallelRunner", False, {"max_workers": 2}, session
        )
    assert type(sequential) is SequentialRunner
    assert type(parallel) is ParallelRunner


def test_kedro_run_with_dask_runner(project_copy, monkeypatch):
    monkeypatch.chdir(project_copy)
    bootstrap_project(project_copy)
    result = CliRunner().invoke(
        cli,
        [
            "run",
            f"--runner={DASK_RUNNER}",
            "--runner-params=processes=False,n_workers=1",
            "--env=test",
            "--to-nodes=random_forest.evaluate",
        ],
    )
    assert result.exit_code == 0, result.output
    assert set(persisted_outputs(project_copy)) == {
        "06_models/random_forest.pickle",
        "08_reporting/random_forest_metrics.json",
    }


def test_a_service_session_gets_params_with_the_run(project_copy, monkeypatch):
    """A project whose settings.py picks KedroServiceSession: --params go to each
    run, as with Kedro's own `kedro run`, and reach dask_client."""
    monkeypatch.chdir(project_copy)
    bootstrap_project(project_copy)
    monkeypatch.setattr(settings, "SESSION_CLASS", KedroServiceSession)
    options = [
        f"--runner={DASK_RUNNER}",
        "--env=test",
        "--to-nodes=random_forest.evaluate",
    ]
    params = "--params=dask_client.processes=false,dask_client.n_workers=1"
    result = CliRunner().invoke(cli, ["run", *options, params])
    assert result.exit_code == 0, result.output
    assert set(persisted_outputs(project_copy)) == {
        "06_models/random_forest.pickle",
        "08_reporting/random_forest_metrics.json",
    }
    result = CliRunner().invoke(
        cli, ["run", *options, "--params=dask_client.n_wokers=1"]
    )
    assert result.exit_code == 1
    assert "Unknown key(s) in dask_client: n_wokers" in result.output


def test_a_bad_setting_is_one_clear_error(project_copy, monkeypatch):
    monkeypatch.chdir(project_copy)
    bootstrap_project(project_copy)
    result = CliRunner().invoke(
        cli, ["run", f"--runner={DASK_RUNNER}", "--runner-params=n_wokers=2"]
    )
    assert result.exit_code == 1
    assert "Unknown key(s) in dask_client: n_wokers" in result.output
    assert "n_workers" in result.output
    assert "Traceback" not in result.output
