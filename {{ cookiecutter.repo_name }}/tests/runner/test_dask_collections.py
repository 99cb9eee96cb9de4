"""Nodes that compute dask collections run their partitions on the run's cluster.

Whether the node computes itself, or a dask dataset loads or saves for it (in
Kedro's async pool threads too), every partition must run on one of the cluster's
workers, and no way of waiting for the cluster may deadlock it, even with more
such nodes at once than the workers have threads.
"""

from __future__ import annotations

import functools
import gc
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from distributed import LocalCluster
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from kedro_datasets.dask import ParquetDataset
from kedro_datasets.pandas import CSVDataset
from pluggy import PluginManager

from {{ cookiecutter.python_package }}.runner.dask_collections import computes_dask_collections

from . import collection_pipelines as dask_cases
from .parity_pipelines import Case
from .test_parity import dask_runner, tasks_left_on_scheduler

#: Seconds a run of these small pipelines may take; a deadlock never ends.
BOUND = 60


def _run_within_bound(runner: Any, case: Case, folder: Path, hooks: PluginManager):
    """Runs ``case`` in a thread and fails if it has not ended within ``BOUND``."""
    folder.mkdir(parents=True)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            runner.run(case.pipeline, case.catalog(folder), hooks)
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=BOUND)
    assert not thread.is_alive(), f"{case} did not finish in {BOUND} s: deadlock?"
    if "error" in outcome:
        raise outcome["error"]


def _outputs(folder: Path) -> dict[str, Any]:
    """Each output's content: CSV and JSON files as text, Parquet folders as frames."""
    outputs: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            outputs[path.name] = pd.read_parquet(path).reset_index(drop=True)
        else:
            outputs[path.name] = path.read_text()
    return outputs


def _places(records: Path) -> set[str]:
    return {path.read_text() for path in records.iterdir()}


def _workers(cluster: LocalCluster) -> set[str]:
    return set(cluster.scheduler_info["workers"])


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_same_outputs_and_every_partition_on_the_cluster(
    cluster, hook_manager, tmp_path, is_async
):
    records = {name: tmp_path / f"records_{name}" for name in ("seq", "dask")}
    for folder in records.values():
        folder.mkdir()
    sequential = dask_cases.build_save_load_aggregate(records["seq"])
    SequentialRunner(is_async=is_async).run(
        sequential.pipeline, sequential.catalog(_fresh(tmp_path / "seq")), hook_manager
    )
    case = dask_cases.build_save_load_aggregate(records["dask"])
    _run_within_bound(
        dask_runner(cluster, is_async=is_async), case, tmp_path / "dask", hook_manager
    )

    expected, actual = _outputs(tmp_path / "seq"), _outputs(tmp_path / "dask")
    assert (
        expected.keys()
        == actual.keys()
        == {
            "doubled_summary.csv",
            "measurements",
            "summary.csv",
        }
    )
    pd.testing.assert_frame_equal(
        actual.pop("measurements"), expected.pop("measurements")
    )
    assert actual == expected
    places = _places(records["dask"])
    assert places and places <= _workers(cluster), f"partitions ran on {places}"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_more_waiting_nodes_than_worker_threads_do_not_deadlock(
    process_cluster, hook_manager, tmp_path, is_async
):
    """Four nodes wait on the cluster at once, each in its own way, on two
    single-threaded workers."""
    records = tmp_path / "records"
    records.mkdir()
    case = dask_cases.four_ways_to_compute(records)
    runner = dask_runner(process_cluster, is_async=is_async)
    _run_within_bound(runner, case, tmp_path / "out", hook_manager)

    totals = {name: float(text) for name, text in _outputs(tmp_path / "out").items()}
    expected = float(sum(range(dask_cases.ROWS)))
    assert totals == dict.fromkeys(totals, expected) and len(totals) == 4
    assert _places(records) <= _workers(process_cluster)


def test_a_persisted_collection_between_nodes_is_refused_and_freed(
    cluster, observer, hook_manager, tmp_path
):
    records = tmp_path / "records"
    records.mkdir()
    pipeline = Pipeline(
        [
            Node(dask_cases.build_measurements, "params:records", "lazy", name="build"),
            Node(dask_cases.persisted_on_the_cluster, "lazy", "kept", name="keep"),
            Node(dask_cases.total_by_compute, "kept", "total", name="total"),
        ]
    )

    def catalog(folder: Path) -> DataCatalog:
        catalog = DataCatalog()
        catalog["params:records"] = str(records)
        return catalog

    case = Case("persisted", pipeline, catalog)
    # Without the collector, only the runner's own release frees the partitions:
    # the error's traceback refers to them through a reference cycle.
    observer.run(gc.disable)
    try:
        with pytest.raises(TypeError, match="persist") as error:
            _run_within_bound(
                dask_runner(cluster), case, tmp_path / "out", hook_manager
            )
        assert tasks_left_on_scheduler(observer) == {}
    finally:
        observer.run(gc.enable)
    message = str(error.value)
    assert "'keep' returned a persisted dask collection as 'kept'" in message
    assert "Save it with a dask dataset" in message


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def _uses_a_helper(frame):
    return dask_cases.total_by_compute(frame)


@pytest.mark.parametrize(
    "func, datasets, expected",
    [
        (dask_cases.total_by_client_compute, {}, True),  # distributed.get_client
        (dask_cases.build_measurements, {}, True),  # dd.from_pandas
        (dask_cases.identity, {}, False),
        (functools.partial(dask_cases.total_by_dask_compute), {}, True),
        (_uses_a_helper, {}, False),  # another module's helper: not followed
        (dask_cases.identity, {"x": ParquetDataset(filepath="x")}, True),
        (dask_cases.identity, {"x": CSVDataset(filepath="x.csv")}, False),
    ],
)
def test_which_nodes_leave_the_thread_pool(func, datasets, expected):
    node = Node(func, "x", "y", name="node")
    assert computes_dask_collections(node, datasets) is expected
