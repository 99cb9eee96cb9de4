"""What a Dask worker runs for one Kedro node.

The node runs through Kedro's own ``Task``, so hooks, ``node.confirms``, async
loading and generator nodes behave exactly as under ``SequentialRunner``. Its
catalog holds the node's persisted datasets (loaded and saved here, on the worker)
and a ``MemoryDataset`` for each in-memory input and output, filled from and
returned to Dask.
"""

from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from dask import is_dask_collection
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.pipeline.node import Node
from kedro.runner import Task

from .dask_collections import leave_the_worker_thread_pool, refuse_persisted
from .kedro_internals import _infer_copy_mode, _NullPluginManager
from .log_forwarding import node_logs_to_driver, this_process
from .recomputed_nodes import recomputing
from .run_setup import hooks_here
from .worker_hooks import driver_hook_managers, mlflow_runs_left_open

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What every node task of one run shares."""

    #: Unique per run: part of every Dask key and tag of every forwarded log record.
    token: str
    run_id: str | None
    #: Kedro's ``is_async``: load and save each node's datasets with threads.
    is_async: bool
    #: Whether each worker was prepared for the run (``run_setup.RunSetup``):
    #: then a node runs only where that is under way.
    prepared: bool
    #: The driver's logger levels, which workers take.
    logging_levels: dict[str, int]
    #: ``this_process()`` of the driver: a worker in that process logs directly.
    driver_process: str


@dataclass(frozen=True)
class NodeTask:
    """One node, and what its Dask task needs to run it."""

    node: Node
    run: RunContext
    #: Datasets the node loads, saves or confirms itself, on the worker.
    persisted: dict[str, AbstractDataset]
    #: ``(name, copy_mode)`` of the inputs Dask passes as task arguments, in order.
    memory_inputs: tuple[tuple[str, str | None], ...]
    #: The outputs the task returns to Dask, in this order.
    memory_outputs: tuple[str, ...]
    #: Whether the node's code or datasets compute dask collections.
    computes_dask_collections: bool = False
    #: Whether the node loads or saves files of this machine (``shared_storage``).
    uses_local_files: bool = False


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
    if task.computes_dask_collections or any(map(is_dask_collection, upstream)):
        leave_the_worker_thread_pool()
    node, persisted, hook_manager = task.node, task.persisted, _hook_manager(task)
    hooked = not isinstance(hook_manager, _NullPluginManager)
    # Computed again after its worker was lost: only its saves and hooks matter.
    recomputed = (hooked or bool(persisted)) and recomputing()
    if recomputed and not task.memory_outputs:
        return None  # what it saved is saved: nothing to compute again
    inputs = {
        name: _memory_dataset_holding(value, copy_mode)
        for (name, copy_mode), value in zip(task.memory_inputs, upstream)
    }
    if recomputed:  # its saves, confirms and hooks happened when it first ran
        node = node._copy(confirms=None) if node.confirms else node
        persisted = {n: d for n, d in persisted.items() if n not in node.outputs}
        hook_manager = _NullPluginManager()
    outputs = {
        name: _empty_memory_dataset("assign")
        for name in node.outputs
        if name in task.memory_outputs or recomputed
    }
    catalog = DataCatalog(datasets={**persisted, **inputs, **outputs})
    node_logs_to_driver(
        task.run.token, task.run.logging_levels, task.run.driver_process
    )
    with mlflow_runs_left_open() if hooked else nullcontext():
        if recomputed:
            logger.warning(
                "Kedro node '%s' finished before, on a Dask worker that was lost "
                "since with its in-memory outputs: computing them again, without "
                "saving its datasets or firing its hooks again.",
                node.name,
            )
        Task(
            node=node,
            catalog=catalog,
            is_async=task.run.is_async,
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


def _hook_manager(task: NodeTask) -> Any:
    """The hook manager of the run on this worker: the driver's own in its
    process, else that of the copies of its plugins (``run_setup``)."""
    run = task.run
    if run.driver_process == this_process():
        return driver_hook_managers.get(run.token) or _NullPluginManager()
    if run.prepared and (manager := hooks_here(run.token, task.uses_local_files)):
        return manager
    return _NullPluginManager()
