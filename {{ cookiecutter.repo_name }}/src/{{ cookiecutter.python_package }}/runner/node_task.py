"""What a Dask worker runs for one Kedro node.

The node runs through Kedro's own ``Task``, so hooks, ``node.confirms``, async
loading and generator nodes behave exactly as under ``SequentialRunner``. Its
catalog holds the node's persisted datasets (loaded and saved here, on the worker)
and a ``MemoryDataset`` for each in-memory input and output, filled from and
returned to Dask.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

import kedro.framework.project as kedro_project
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.pipeline.node import Node
from kedro.runner import Task
from pluggy import PluginManager

from .dask_collections import (
    has_dask_collection,
    leave_the_worker_thread_pool,
    refuse_persisted,
)
from .kedro_internals import (
    _create_hook_manager,
    _infer_copy_mode,
    _NullPluginManager,
    _register_hooks,
    _register_hooks_entry_points,
)
from .log_forwarding import node_logs_to_driver
from .time_limits import announce_start


@dataclass(frozen=True)
class RunContext:
    """What every node task of one run shares."""

    #: Unique per run: part of every Dask key and tag of every forwarded log record.
    token: str
    run_id: str | None
    #: The project whose ``settings.HOOKS`` fire on the workers.
    package_name: str | None
    #: False when the run was given no hook manager: then no node hook fires.
    fire_hooks: bool
    #: The driver's logger levels, which workers take.
    logging_levels: dict[str, int]
    #: ``this_process()`` of the driver: a worker in that process logs directly.
    driver_process: str


@dataclass(frozen=True)
class NodeTask:
    """One node, and what its Dask task needs to run it."""

    node: Node
    run: RunContext
    is_async: bool
    #: Datasets the node loads, saves or confirms itself, on the worker.
    persisted: dict[str, AbstractDataset]
    #: ``(name, copy_mode)`` of the inputs Dask passes as task arguments, in order.
    memory_inputs: tuple[tuple[str, str | None], ...]
    #: The outputs the task returns to Dask, in this order.
    memory_outputs: tuple[str, ...]
    #: Whether the driver times the node (it has a limit in ``tag_timeouts``).
    announces_start: bool = False
    #: Whether the node's code or datasets compute dask collections.
    computes_dask_collections: bool = False


@dataclass(frozen=True)
class Inline:
    """A small pipeline input passed inside a task's arguments; wrapped, so that
    Dask hands it over as it is instead of searching it for futures."""

    value: Any


def run_node_task(task: NodeTask, *upstream: Any) -> Any:
    """Runs ``task.node`` on this worker and returns its in-memory outputs.

    ``upstream`` starts with the values of ``task.memory_inputs`` (``Inline`` for
    small pipeline inputs); any further arguments only make Dask wait for nodes
    whose outputs are persisted.
    Returns ``None``, the single in-memory output, or a tuple of them.
    """
    if task.announces_start:
        announce_start(task.run.token, task.node.name)
    if task.computes_dask_collections or has_dask_collection(upstream):
        leave_the_worker_thread_pool()
    hook_manager = _hook_manager(task.run)
    inputs = {
        name: _memory_dataset_holding(value, copy_mode)
        for (name, copy_mode), value in zip(task.memory_inputs, upstream)
    }
    outputs = {name: _empty_memory_dataset("assign") for name in task.memory_outputs}
    catalog = DataCatalog(datasets={**task.persisted, **inputs, **outputs})
    with node_logs_to_driver(
        task.run.token, task.run.logging_levels, task.run.driver_process
    ):
        Task(
            node=task.node,
            catalog=catalog,
            is_async=task.is_async,
            hook_manager=hook_manager,
            run_id=task.run.run_id,
        ).execute()
    values = tuple(outputs[name].load() for name in task.memory_outputs)
    refuse_persisted(task.node, dict(zip(task.memory_outputs, values)))
    if len(values) == 1:
        return values[0]
    return values or None


def _memory_dataset_holding(value: Any, copy_mode: str | None) -> MemoryDataset:
    if isinstance(value, Inline):
        value = value.value
    dataset = _empty_memory_dataset(_copy_mode_for(value, copy_mode))
    # The value is already this task's own; only loads copy it, as in Kedro.
    dataset._data = value
    return dataset


_empty_memory_datasets: dict[str, MemoryDataset] = {}


def _empty_memory_dataset(copy_mode: str) -> MemoryDataset:
    """A new, empty ``MemoryDataset(copy_mode=copy_mode)``.

    It is a shallow copy of one built once per mode: Kedro's dataset constructor
    inspects its own signature on every call, which cost a third of this task's
    own work for a trivial node. The copies share only the record of constructor
    arguments, which Kedro never changes.
    """
    if copy_mode not in _empty_memory_datasets:
        _empty_memory_datasets[copy_mode] = MemoryDataset(copy_mode=copy_mode)
    return copy.copy(_empty_memory_datasets[copy_mode])


_inferred_copy_modes: dict[type, str] = {}


def _copy_mode_for(value: Any, copy_mode: str | None) -> str:
    """The copy mode Kedro's ``MemoryDataset`` applies when it loads ``value``.

    Without a mode, Kedro infers one on every load, and each inference retries
    importing optional libraries (ibis): a failed import scans ``sys.path``, about
    half of this task's own work for a trivial node. The answer depends only on
    the value's type, so Kedro is asked once per type in this process.
    """
    if copy_mode is not None:
        return copy_mode
    kind = type(value)
    if kind not in _inferred_copy_modes:
        _inferred_copy_modes[kind] = _infer_copy_mode(value)
    return _inferred_copy_modes[kind]


_setup_lock = threading.Lock()
_hook_managers: dict[str | None, PluginManager] = {}


def _hook_manager(run: RunContext) -> Any:
    """The project's hook manager in this process, built once."""
    if not run.fire_hooks:
        return _NullPluginManager()
    with _setup_lock:
        if run.package_name not in _hook_managers:
            if run.package_name and kedro_project.PACKAGE_NAME != run.package_name:
                # A worker process starts with empty settings: load the project's.
                kedro_project.configure_project(run.package_name, preserve_logging=True)
            manager = _create_hook_manager()
            _register_hooks(manager, kedro_project.settings.HOOKS)
            _register_hooks_entry_points(
                manager, kedro_project.settings.DISABLE_HOOKS_FOR_PLUGINS
            )
            _hook_managers[run.package_name] = manager
        return _hook_managers[run.package_name]
