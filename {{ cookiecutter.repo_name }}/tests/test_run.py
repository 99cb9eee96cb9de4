"""Whole runs of the project through a KedroSession, as `kedro run` makes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import AbstractRunner, SequentialRunner

from {{ cookiecutter.python_package }}.runner import DaskRunner

from .conftest import copy_project, persisted_outputs

MODELS = (
    "logistic_regression",
    "support_vector_machine",
    "random_forest",
    "gradient_boosting",
)
EXPECTED_OUTPUTS = {
    *(f"06_models/{model}.pickle" for model in MODELS),
    *(f"08_reporting/{model}_metrics.json" for model in MODELS),
    "08_reporting/model_comparison.csv",
    "08_reporting/model_comparison.png",
    "07_model_output/batch_scores.json",
    *(f"03_primary/simulated_flowers/part.{index}.parquet" for index in range(4)),
}


def run_session(project: Path, runner: AbstractRunner) -> dict[str, bytes]:
    bootstrap_project(project)
    # conf/test: the example with small settings.
    with KedroSession.create(project_path=project, env="test") as session:
        session.run(runner=runner)
    return persisted_outputs(project)


@pytest.fixture
def sequential_outputs(project_copy: Path) -> dict[str, bytes]:
    return run_session(project_copy, SequentialRunner())


def test_sequential_run_writes_every_output(sequential_outputs):
    assert set(sequential_outputs) == EXPECTED_OUTPUTS


def test_dask_run_on_an_in_process_cluster_matches_sequential(
    sequential_outputs, tmp_path
):
    project = copy_project(tmp_path / "dask")
    runner = DaskRunner(processes=False, n_workers=1, threads_per_worker=4)
    assert run_session(project, runner) == sequential_outputs
