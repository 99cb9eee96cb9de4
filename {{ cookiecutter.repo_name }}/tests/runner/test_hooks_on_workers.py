"""Plugins on Dask workers: node and dataset hooks fire on copies of the driver's
plugin instances as the run-level hooks left them; what the copies collect is
merged back before the run returns; the environment the plugins set on the
driver reaches the workers for the run only (runner/worker_hooks.py)."""

from __future__ import annotations

import os
import time

import distributed
import pytest
from distributed import Client, LocalCluster
from kedro.io import MemoryDataset
from kedro.io.data_catalog import _LazyDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from {{ cookiecutter.python_package }}.runner import DaskRunner, DaskSetupError
from {{ cookiecutter.python_package }}.runner.kedro_internals import _create_hook_manager

from . import parity_pipelines as cases
from .recording_project.hooks import (
    CatalogReadingPlugin,
    CollectingPlugin,
    LockKeepingPlugin,
    StatefulPlugin,
    UnpicklablePlugin,
)


def _run(runner, plugin, folder) -> tuple:
    """Runs the fan-out case as a session would, with ``plugin`` registered and
    given its run-level state."""
    manager = _create_hook_manager()
    manager.register(plugin)
    plugin.run_name = "set before the run"
    case = cases.fan_out_fan_in(width=6)
    folder.mkdir()
    runner.run(case.pipeline, case.catalog(folder), manager)
    return plugin.summary()


def test_plugins_state_goes_to_the_workers_and_comes_back(
    cluster: LocalCluster, tmp_path, monkeypatch
):
    runner = DaskRunner(address=cluster.scheduler_address, upload_project=False)
    # As kedro-mlflow sets MLFLOW_TRACKING_URI in after_context_created.
    monkeypatch.setenv("STATEFUL_PLUGIN_SETTING", "set by a plugin")
    expected = _run(SequentialRunner(), StatefulPlugin(), tmp_path / "seq")
    actual = _run(runner, StatefulPlugin(), tmp_path / "dask")
    assert actual == expected
    assert set(expected[0].values()) == {("set before the run", "set by a plugin")}
    with Client(cluster, set_as_default=False) as client:
        if set(client.run(os.getpid).values()) != {os.getpid()}:  # processes
            left = client.run(os.getenv, "STATEFUL_PLUGIN_SETTING")
            assert set(left.values()) == {None}, "the environment stayed on workers"


def test_a_variable_set_before_the_runner_was_made_reaches_the_workers(
    cluster: LocalCluster, tmp_path, monkeypatch
):
    """A notebook's next session makes a new runner after the last run's plugins
    set the variable, and the workers undid it after that run."""
    monkeypatch.setenv("STATEFUL_PLUGIN_SETTING", "set by a plugin")
    expected = _run(SequentialRunner(), StatefulPlugin(), tmp_path / "seq")
    for run in ("first", "second"):
        runner = DaskRunner(address=cluster.scheduler_address, upload_project=False)
        assert _run(runner, StatefulPlugin(), tmp_path / run) == expected, run


class _OnlyWhereMade(JSONDataset):
    """Cannot be unpickled in another process, as a dataset of a package the workers
    lack: it must not take the others from the hooks' catalog."""

    def __reduce__(self) -> tuple:
        return _made_in, (os.getpid(), str(self._filepath))


def _made_in(process: int, filepath: str) -> _OnlyWhereMade:
    if os.getpid() != process:
        raise ModuleNotFoundError("not installed on this worker")
    return _OnlyWhereMade(filepath=filepath)


def _slowly_add_one(x: int) -> int:
    time.sleep(0.3)  # both start before either ends: one on each worker
    return x + 1


def _retire_the_other_worker(first: int, second: int) -> int:
    """Closes, as ``adapt`` scaling down does, the worker that ran the other node."""
    client, here = distributed.get_client(), distributed.get_worker().address
    others = [w for w in client.scheduler_info(n_workers=-1)["workers"] if w != here]
    client.retire_workers(others)
    return first + second


def test_what_a_worker_leaving_mid_run_collected_comes_back(tmp_path):
    plugin, manager = StatefulPlugin(), _create_hook_manager()
    manager.register(plugin)
    pipeline = Pipeline(
        [
            Node(_slowly_add_one, "seed", "a", name="first"),
            Node(_slowly_add_one, "seed", "b", name="second"),
            Node(_retire_the_other_worker, ["a", "b"], "c", name="retire"),
            Node(cases.add_one, "c", "d", name="last"),
        ]
    )
    runner = DaskRunner(n_workers=2, threads_per_worker=1, dashboard_address=None)
    catalog = cases._catalog({"seed": MemoryDataset(1)})
    assert runner.run(pipeline, catalog, manager)["d"].load() == 5
    assert set(plugin.seen) == plugin.finished == {"first", "second", "retire", "last"}


def _collected(runner, folder) -> tuple[dict, set[int]]:
    """The plugin's summary, and the processes its node hooks fired in."""
    plugin, manager = CollectingPlugin(), _create_hook_manager()
    manager.register(plugin)
    manager.register(LockKeepingPlugin())
    # Two slow roots, both started before either ends: one on each worker, where
    # their branches then run.
    pipeline = Pipeline(
        [
            *(Node(_slowly_add_one, "seed", side, name=side) for side in "ab"),
            *(
                Node(cases.add_one, side, f"{side}{i}", name=f"{side}{i}")
                for side in "ab"
                for i in range(3)
            ),
        ]
    )
    folder.mkdir()
    runner.run(pipeline, cases._catalog({"seed": MemoryDataset(1)}), manager)
    return plugin.summary(), plugin.processes


def test_what_plugins_collect_across_workers_adds_up_as_in_one_process(
    cluster: LocalCluster, tmp_path
):
    """Each worker's part counts, whatever shape the state has."""
    runner = DaskRunner(address=cluster.scheduler_address, upload_project=False)
    expected, _ = _collected(SequentialRunner(), tmp_path / "seq")
    actual, processes = _collected(runner, tmp_path / "dask")
    assert actual == expected
    assert len(expected["calls"]) == 8  # noqa: PLR2004 (the roots and branches)
    with Client(cluster, set_as_default=False) as client:
        assert len(processes) == len(set(client.run(os.getpid).values()))


def _catalog_read_by_hooks(runner, folder) -> dict:
    names = ("parameters", "params:factor_3", "unused", "unused_lazy", "added")
    plugin, manager = CatalogReadingPlugin(names), _create_hook_manager()
    manager.register(plugin)
    case = cases.fan_out_fan_in(width=4)
    folder.mkdir()
    catalog = case.catalog(folder)
    catalog["parameters"] = {"factor_3": 3}
    catalog["unused"] = JSONDataset(filepath=str(folder / "unused.json"))
    catalog.save("unused", {"read": "by hooks"})
    config = {"type": "json.JSONDataset", "filepath": str(folder / "unused.json")}
    catalog["unused_lazy"] = _LazyDataset("unused_lazy", config)
    catalog["not_on_workers"] = _OnlyWhereMade(filepath=str(folder / "x.json"))
    catalog["added"] = MemoryDataset({"added": "by a plugin"})  # no node's
    runner.run(case.pipeline, catalog, manager)
    return plugin.read


def test_node_hooks_see_the_runs_parameters_and_persisted_datasets(
    cluster: LocalCluster, tmp_path
):
    runner = DaskRunner(address=cluster.scheduler_address, upload_project=False)
    expected = _catalog_read_by_hooks(SequentialRunner(), tmp_path / "seq")
    assert _catalog_read_by_hooks(runner, tmp_path / "dask") == expected
    assert len(expected) == 6


def _run_with_a_plugin_that_cannot_be_copied(
    cluster: LocalCluster, folder, name: str | None = "locked-plugin"
) -> None:
    manager = _create_hook_manager()
    manager.register(UnpicklablePlugin(), name=name)
    case = cases.fan_out_fan_in(width=2)
    runner = DaskRunner(address=cluster.scheduler_address)
    runner.run(case.pipeline, case.catalog(folder), manager)


def test_a_plugin_that_cannot_be_copied_is_named_before_any_node_runs(
    process_cluster: LocalCluster, tmp_path
):
    with pytest.raises(DaskSetupError, match="locked-plugin") as raised:
        _run_with_a_plugin_that_cannot_be_copied(process_cluster, tmp_path)
    assert "processes: false" in str(raised.value)
    assert not list(tmp_path.glob("*.json")), "a node ran"


def test_a_project_hook_that_cannot_be_copied_is_named_by_its_class(
    process_cluster: LocalCluster, tmp_path
):
    """settings.HOOKS are registered unnamed (pluggy names them by id), and
    DISABLE_HOOKS_FOR_PLUGINS does nothing for them."""
    with pytest.raises(DaskSetupError) as raised:
        _run_with_a_plugin_that_cannot_be_copied(process_cluster, tmp_path, None)
    message = str(raised.value)
    assert f"{UnpicklablePlugin.__module__}.UnpicklablePlugin" in message
    assert "__getstate__" in message and "DISABLE_HOOKS" not in message


def test_workers_in_this_process_fire_a_plugin_that_cannot_be_copied(
    thread_cluster: LocalCluster, tmp_path
):
    _run_with_a_plugin_that_cannot_be_copied(thread_cluster, tmp_path)
    assert list(tmp_path.glob("*.json")), "no node ran"
