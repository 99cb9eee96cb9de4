"""What a worker runs for one node: Kedro's own ``Task``, so hooks, confirms, async
loading and generator nodes behave as under ``SequentialRunner``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from dask import is_dask_collection
from fsspec.implementations.local import LocalFileSystem
from kedro.io import (
    AbstractDataset,
    AbstractVersionedDataset,
    DataCatalog,
    DatasetError,
    MemoryDataset,
)
from kedro.pipeline.node import Node
from kedro.runner import Task

from .builds import in_driver_process
from .dask_collections import leave_the_worker_thread_pool, refuse_persisted
from .errors import NodeExited, error_chain, unpicklable
from .kedro_internals import _copy_with_mode, _infer_copy_mode, _NullPluginManager
from .log_forwarding import node_logs_to_driver
from .recomputed_nodes import INTERRUPTED, RECOMPUTED, marks
from .run_setup import hooks_here
from .worker_hooks import mlflow_runs_left_open

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What every node task of one run shares."""

    #: Unique per run: part of every Dask key and tag of every forwarded log record.
    token: str
    run_id: str | None
    is_async: bool
    #: Workers were prepared (``run_setup.RunSetup``): nodes refuse unprepared ones.
    prepared: bool
    #: ``log_forwarding.driver_logging``: levels and warning filters, compressed.
    driver_logging: bytes
    #: Driver's ``this_process()``: in-process workers log and fire hooks as it does.
    driver_process: str
    #: The run catalog's ``validator:`` declarations, applied where nodes load and save.
    validators: dict[str, Any]


@dataclass(frozen=True)
class NodeTask:
    node: Node
    run: RunContext
    #: Datasets the node loads, saves or confirms itself, on the worker.
    persisted: dict[str, AbstractDataset]
    #: ``(name, copy_mode)`` of the inputs Dask passes as task arguments, in order.
    memory_inputs: tuple[tuple[str, str | None], ...]
    #: ``{name: copy_mode}`` of the outputs the task returns to Dask, in this order.
    memory_outputs: dict[str, str | None]
    #: Those of a ``MemoryDataset`` subclass: saved and loaded with it, as in Kedro.
    custom_outputs: dict[str, MemoryDataset]
    #: Whether the node computes dask collections, checked once, on the driver.
    computes_dask: bool


@dataclass(frozen=True)
class Inline:
    """A small pipeline input, wrapped so Dask does not search it for futures."""

    value: Any


def run_node_task(task: NodeTask, *upstream: Any) -> Any:
    """``upstream``: the values of ``task.memory_inputs``, then arguments that only make
    Dask wait for nodes with persisted outputs. Returns None, one output or a tuple."""
    if task.computes_dask or any(map(is_dask_collection, upstream)):
        leave_the_worker_thread_pool()
    in_driver = in_driver_process(task.run.driver_process)
    node, persisted = task.node, task.persisted
    hook_manager, for_hooks, additions_sent = hooks_here(task.run, persisted, in_driver)
    hook_manager = hook_manager or _NullPluginManager()
    hooked = not isinstance(hook_manager, _NullPluginManager)
    # Run again (recomputed_nodes): only its saves and hooks can go wrong.
    rerun = marks() if hooked or persisted else {}
    again = None
    if rerun.get(RECOMPUTED):  # it saved, confirmed and fired hooks when it first ran
        if not task.memory_outputs:
            return None  # what it saved is saved: nothing to compute again
        again = (
            f"Kedro node '{node.name}' finished before on a lost Dask worker: "
            "computing its in-memory outputs again, without saving or firing hooks."
        )
        node = node._copy(confirms=None) if node.confirms else node
        persisted = {n: d for n, d in persisted.items() if n not in node.outputs}
        hook_manager = _NullPluginManager()
    elif rerun.get(INTERRUPTED) and any(name in persisted for name in node.outputs):
        again = _saving_again(node, persisted)
    inputs = {
        name: _memory_dataset_holding(value, copy_mode)
        for (name, copy_mode), value in zip(task.memory_inputs, upstream)
    }
    # Every output not persisted: all of them when computed again.
    outputs = {
        n: _empty_memory_dataset(task.memory_outputs.get(n, "assign"), _CopiedOnSave)
        for n in node.outputs
        if n not in persisted
    } | task.custom_outputs
    catalog = DataCatalog(datasets={**persisted, **inputs, **outputs})
    catalog._validator_specs = task.run.validators
    if hooked:  # the run's parameters, ...: not checked one by one, as by DataCatalog()
        catalog._datasets = {**for_hooks[0], **catalog._datasets}
        catalog._lazy_datasets = dict(for_hooks[1])  # no own names: all materialised
    # In the driver's own process (threads) logs print as they are.
    forwarded: AbstractContextManager[None] = nullcontext()
    if not in_driver:
        forwarded = node_logs_to_driver(task.run.token, task.run.driver_logging)
    guard = mlflow_runs_left_open() if hooked else nullcontext()
    with forwarded, guard, additions_sent:
        if again:
            logger.warning("%s", again)
        try:
            Task(
                node=node,
                catalog=catalog,
                is_async=task.run.is_async,
                hook_manager=hook_manager,
                run_id=task.run.run_id,
            ).execute()
        except Exception as error:
            _make_sendable(error)
            raise
        except (SystemExit, KeyboardInterrupt) as exited:
            raise NodeExited(exited) from None
    values = tuple(_saved(outputs[name]) for name in task.memory_outputs)
    refuse_persisted(task.node, zip(task.memory_outputs, values))
    if not in_driver:
        _refuse_unsendable(task.node, zip(task.memory_outputs, values))
    return values[0] if len(values) == 1 else values or None


_ALWAYS_SENT = frozenset({int, float, bool, str, bytes, type(None)})


def _refuse_unsendable(node: Node, outputs: Iterable[tuple[str, Any]]) -> None:
    """A value Dask cannot serialise would hang its consumer on another worker for
    ever (dask/distributed#6705). Checked where pickle goes object by object: all of a
    plain Python value (Kedro's ``MemoryDataset`` deep-copies it: SequentialRunner
    fails there too), an object array or Series, a DataFrame's object columns."""
    for name, value in outputs:
        if type(value) in _ALWAYS_SENT:
            continue
        by_object, dtype = value, str(getattr(value, "dtype", ""))
        if dtype != "object" and _copy_mode_for(value, None) != "deepcopy":
            if not callable(getattr(value, "select_dtypes", None)):
                continue  # arrays of numbers travel as buffers, and cannot fail
            by_object = value.select_dtypes(include="object")  # a pandas DataFrame
        if (why := unpicklable(by_object)) is not None:
            raise DatasetError(
                f"{name}: Kedro node '{node.name}' returned data that cannot be sent "
                f"to other Dask workers ({why}). Create locks, connections, open "
                "files and generators inside the node that uses them."
            )


def _saving_again(node: Node, persisted: dict[str, AbstractDataset]) -> str:
    """Before a retry of a node that may have saved outputs: removes this run's versions
    of them (Kedro refuses to save a version twice), so they are saved anew."""
    replaced = []
    for name in node.outputs:
        if not isinstance(dataset := persisted.get(name), AbstractVersionedDataset):
            continue
        if (version := dataset.resolve_save_version()) is None:  # not versioned
            continue
        path = str(dataset._get_versioned_path(version))
        if dataset._exists_function(path):  # on the dataset's file system
            file_system = getattr(dataset, "_fs", None) or LocalFileSystem()
            file_system.rm(path, recursive=True)
            replaced.append(name)
    replacing = f", replacing this run's versions of {', '.join(replaced)}"
    return (
        f"Kedro node '{node.name}' runs again (its Dask worker died, or Dask retries "
        f"it), maybe after it saved some of its outputs: it saves them anew"
        f"{replacing if replaced else ''}; its hooks fire again."
    )


def _make_sendable(error: BaseException) -> None:
    """distributed sends an unpicklable error (even in the driver's process) as a bare
    ``Exception``: what cannot travel in the chain's args and attributes becomes its
    repr, so the driver raises the node's own error type, as Kedro would."""
    if unpicklable(error) is None:  # the usual case: nothing to replace
        return
    for link in error_chain(error):
        link.args = tuple(repr(a) if unpicklable(a) else a for a in link.args)
        for name, value in vars(link).items():
            vars(link)[name] = repr(value) if unpicklable(value) else value


class NeverSaved:
    """Passed (the class itself) for an in-memory input no node of the run saves, as a
    transcoded name without a catalog entry: loading it fails as in Kedro."""


def _memory_dataset_holding(value: Any, copy_mode: str | None) -> MemoryDataset:
    if isinstance(value, Inline):
        value = value.value
    if value is NeverSaved:
        return _empty_memory_dataset("assign")
    dataset = _empty_memory_dataset(_copy_mode_for(value, copy_mode))
    # The value is already this task's own; only loads copy it, as in Kedro.
    dataset._data = value
    return dataset


class _CopiedOnSave(MemoryDataset):
    """Copies what the node saves, as Kedro's ``MemoryDataset`` does: a change its code
    makes to the object afterwards (a generator's reused buffer, an input passed
    through) must not reach the consumers, which copy again as they load."""

    def save(self, data: Any) -> None:
        self._data = _copy_with_mode(data, _copy_mode_for(data, self._copy_mode))


def _saved(dataset: MemoryDataset) -> Any:
    """What the node saved: uncopied from ``_CopiedOnSave`` (without ``load``, which
    Kedro wraps in logging code), loaded from a subclass, as Kedro would."""
    if type(dataset) is _CopiedOnSave and dataset._exists():
        return dataset._data
    return dataset.load()  # a subclass's own load, or Kedro's error


def _empty_memory_dataset(
    copy_mode: str | None, kind: type[MemoryDataset] = MemoryDataset
) -> MemoryDataset:
    """A copy of one per mode: Kedro's constructor inspects its signature on each call;
    copies share only the never-changed init args. ``copy.copy``, made cheaper."""
    dataset = kind.__new__(kind)
    dataset.__dict__.update(vars(_model_memory_dataset(copy_mode, kind)))
    return dataset


@functools.cache
def _model_memory_dataset(
    copy_mode: str | None, kind: type[MemoryDataset]
) -> MemoryDataset:
    return kind(copy_mode=copy_mode)  # type: ignore[arg-type]


_inferred_copy_modes: dict[type, str] = {}


def _copy_mode_for(value: Any, copy_mode: str | None) -> str:
    """Cached by type, all it depends on: Kedro infers it on every load, retrying
    optional imports (ibis) that scan ``sys.path``."""
    if copy_mode is not None:
        return copy_mode
    kind = type(value)
    if kind not in _inferred_copy_modes:
        _inferred_copy_modes[kind] = _infer_copy_mode(value)
    return _inferred_copy_modes[kind]
