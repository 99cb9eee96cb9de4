"""Nodes that compute dask collections, on the run's own cluster.

A node's task holds one of its worker's threads. A node that computes a
``dask.dataframe`` or ``dask.array`` submits the partitions to the same cluster
and waits for them: if it keeps its thread while it waits, nodes waiting that way
on every worker thread leave none for the partitions, and the run deadlocks.
Only ``.compute()``/``dask.compute`` called in the task's own thread let go of the
thread by themselves; ``Future.result()``, ``client.compute(...).result()``,
``persist()`` + ``wait`` and the loads and saves Kedro's ``is_async`` mode runs
in threads of its own do not.

So the task of such a node leaves the worker's thread pool (Dask's ``secede``)
before the node starts, and its worker takes another task in its place while the
node mostly waits. Other nodes keep their thread, so ``threads_per_worker`` still
caps how many ordinary nodes a worker runs at once. A node counts as computing
dask collections when its function's code refers to dask or distributed, when one
of its datasets is a dask dataset (kedro-datasets' ``dask.*``), or when one of
its in-memory inputs is a dask collection.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Mapping
from typing import Any

import dask
import distributed
from kedro.io import AbstractDataset
from kedro.pipeline.node import Node

_DASK_PACKAGES = ("dask", "distributed", "dask_ml")
_DASK_DATASETS = "kedro_datasets.dask"


def computes_dask_collections(
    node: Node, datasets: Mapping[str, AbstractDataset]
) -> bool:
    """Whether ``node`` may wait for the cluster, seen from its code and its
    persisted ``datasets`` (checked on the driver, once per node)."""
    return _refers_to_dask(node.func) or any(
        type(dataset).__module__.startswith(_DASK_DATASETS)
        for dataset in datasets.values()
    )


def leave_the_worker_thread_pool() -> None:
    """Lets this worker run other tasks (the node's partitions) in this task's
    thread slot while the node waits for them.

    The task does not rejoin the pool when the node ends: its work is done, and
    rejoining would wait for a free slot before the node's outputs are reported.
    """
    # The worker's own client becomes this process's default, so that computes
    # in threads without a worker context (Kedro's async loads and saves) go to
    # the cluster instead of a local thread pool.
    distributed.get_client()
    distributed.secede()


def refuse_persisted(node: Node, outputs: Mapping[str, Any]) -> None:
    """Refuses outputs that are persisted collections: their partitions are
    futures of this worker's client, which another node's worker cannot fetch
    reliably and Dask frees once nothing refers to them."""
    for name, value in outputs.items():
        if not dask.is_dask_collection(value):
            continue
        futures = distributed.futures_of(value)
        for future in futures:
            # Now: the traceback of the error below keeps ``value`` alive until
            # the garbage collector runs, and with it the keys on the scheduler.
            future.release()
        if futures:
            raise TypeError(
                f"Node {node.name!r} returned a persisted dask collection as "
                f"{name!r}: its partitions live only as long as this task's "
                f"futures. Save it with a dask dataset in the catalog (e.g. "
                f"dask.ParquetDataset), or return it without calling .persist() "
                f"(each consumer then computes it)."
            )


def _refers_to_dask(func: Any) -> bool:
    function = _plain_function(func)
    try:
        return _function_refers_to_dask(function)
    except TypeError:  # an unhashable callable: not worth remembering
        return _code_refers_to_dask(function, set())


@functools.lru_cache(maxsize=4096)
def _function_refers_to_dask(function: Any) -> bool:
    return _code_refers_to_dask(function, set())


def _plain_function(func: Any) -> Any:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.unwrap(func)


def _code_refers_to_dask(func: Any, seen: set[int]) -> bool:
    """Whether the global names ``func``'s code uses are dask or distributed
    objects, directly or through functions of the same module it calls."""
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    namespace = getattr(func, "__globals__", {})
    for name in _names_used(code):
        value = namespace.get(name)
        if value is None:
            continue
        if _is_from_dask(value):
            return True
        if (
            isinstance(value, types.FunctionType)
            and value.__module__ == func.__module__
            and _code_refers_to_dask(value, seen)
        ):
            return True
    return False


def _names_used(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):  # nested functions, lambdas
            names |= _names_used(constant)
    return names


def _is_from_dask(value: Any) -> bool:
    module = value.__name__ if isinstance(value, types.ModuleType) else None
    module = module or getattr(value, "__module__", None) or ""
    return module.split(".")[0] in _DASK_PACKAGES
