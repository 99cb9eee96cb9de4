"""Nodes computing dask collections on the run's cluster ``secede`` while they wait, or
they could take every thread from their partitions and deadlock the run (a plain
``.compute()`` does so itself). Others keep theirs: ``threads_per_worker`` caps them."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Iterable, Mapping
from typing import Any

import dask
import distributed
from kedro.io import AbstractDataset
from kedro.pipeline.node import Node

_DASK_PACKAGES = ("dask", "distributed", "dask_ml")


def computes_dask_collections(
    node: Node, datasets: Mapping[str, AbstractDataset]
) -> bool:
    """From the node's code and persisted datasets."""
    if any(
        type(d).__module__.startswith("kedro_datasets.dask") for d in datasets.values()
    ):
        return True
    function = node.func
    while isinstance(function, functools.partial):
        function = function.func
    function = inspect.unwrap(function)
    try:
        return _function_refers_to_dask(function)
    except TypeError:  # an unhashable callable: not worth remembering
        return _code_refers_to_dask(function, set())


def leave_the_worker_thread_pool() -> None:
    """Never rejoins: that would wait for a free slot before reporting the outputs."""
    # Makes the worker's client the default: Kedro's async loads/saves use the cluster.
    distributed.get_client()
    distributed.secede()


def refuse_persisted(node: Node, outputs: Iterable[tuple[str, Any]]) -> None:
    """Persisted collections' partitions are futures of this worker's client: other
    workers cannot fetch them reliably, and Dask frees them once unreferenced."""
    for name, value in outputs:
        if dask.is_dask_collection(value) and (held := distributed.futures_of(value)):
            for future in held:
                # Now: the error's traceback would keep the keys alive until GC runs.
                future.release()
            raise TypeError(
                f"Node {node.name!r} returned a persisted dask collection as "
                f"{name!r}. Save it with a dask dataset in the catalog, or return it "
                "without calling .persist()."
            )


@functools.lru_cache(maxsize=4096)
def _function_refers_to_dask(function: Any) -> bool:
    return _code_refers_to_dask(function, set())


def _code_refers_to_dask(func: Any, seen: set[int]) -> bool:
    """Also follows the functions of the same module that ``func`` calls."""
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    namespace = getattr(func, "__globals__", {})
    for name in _names_used(code):
        value = namespace.get(name)
        module = value.__name__ if isinstance(value, types.ModuleType) else None
        module = module or getattr(value, "__module__", None) or ""
        if module.split(".")[0] in _DASK_PACKAGES or (
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
