"""Node and dataset hooks fire where the node runs: workers fire them on copies of the
plugins pickled after ``before_pipeline_run``, and what the copies add to plugin state
(dict, list, set attributes) is sent back as each node ends, and merged into the
driver's plugins before ``after_pipeline_run``."""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import cloudpickle
import distributed
from kedro.framework.hooks.specs import DatasetSpecs, NodeSpecs
from kedro.io import AbstractDataset, CatalogProtocol, DataCatalog, MemoryDataset
from pluggy import PluginManager

from .errors import DaskSetupError, unpicklable, unpickled_each
from .kedro_internals import _create_hook_manager

#: The hooks Kedro fires where a node runs.
NODE_HOOKS = frozenset(
    name for name in {*vars(NodeSpecs), *vars(DatasetSpecs)} if not name.startswith("_")
)
#: For the node hooks' catalog: parameters and persisted datasets, and lazy ones.
HookDatasets = tuple[dict[str, AbstractDataset], dict[str, Any]]


@dataclass(frozen=True)
class WorkerHooks:
    #: The plugins that implement node or dataset hooks, by name, pickled.
    plugins: bytes | None
    #: Variables set (or removed: None) on the driver since the runner was created.
    environment: Mapping[str, str | None]
    #: The plugins' modules, which workers must import to unpickle them.
    modules: frozenset[str] = frozenset()


def worker_hooks(
    hook_manager: Any, environment_before: Mapping[str, str]
) -> WorkerHooks | None:
    """The run's plugins and environment for the workers; None if nothing to send."""
    managed = isinstance(hook_manager, PluginManager)
    plugins = {
        name: plugin
        for name, plugin in (hook_manager.list_name_plugin() if managed else ())
        if NODE_HOOKS & {c.name for c in hook_manager.get_hookcallers(plugin) or ()}
    }
    environment: dict[str, str | None] = {
        n: v for n, v in os.environ.items() if environment_before.get(n) != v
    }
    environment.update({n: None for n in environment_before if n not in os.environ})
    if not plugins and not environment:
        return None
    modules = frozenset(type(plugin).__module__ for plugin in plugins.values())
    return WorkerHooks(_pickled(plugins) if plugins else None, environment, modules)


def datasets_for_hooks(catalog: CatalogProtocol) -> HookDatasets:
    """What node hooks find in the run's catalog under SequentialRunner, but the
    in-memory data, which is on other workers. Lazy ones travel as configurations."""
    if not isinstance(catalog, DataCatalog):
        return {}, {}
    return {
        name: dataset
        for name, dataset in catalog._datasets.items()
        if not isinstance(dataset, MemoryDataset)
        or name == "parameters"
        or name.startswith("params:")
    }, dict(catalog._lazy_datasets)


#: Hook managers and datasets_for_hooks of the runs under way, by token: in-process
#: workers fire these.
driver_hook_managers: dict[str, tuple[Any, HookDatasets]] = {}


class HooksOnWorker:
    """A worker process's copies of one run's plugins."""

    def __init__(self, plugins: bytes, datasets: bytes, topic: str) -> None:
        self._topic, self._lock = topic, threading.Lock()
        with import_warnings_silenced():  # of modules imported: the driver showed them
            self._as_sent = cloudpickle.loads(plugins)
            found, lazy = cloudpickle.loads(datasets)
            self.datasets = unpickled_each(found), lazy
        self._plugins = cloudpickle.loads(plugins)
        self.manager = _create_hook_manager()
        for name, plugin in self._plugins.items():
            self.manager.register(plugin, name=name)

    @contextmanager
    def additions_sent(self) -> Iterator[None]:
        """Sends the driver what the copies added while a node ran, as it ends: the
        worker, and the copies with it, may be gone by the run's end."""
        try:
            yield
        finally:
            # Under a lock: nodes in other threads add and send too. What cannot be
            # pickled is not sent, and the node's own outcome stands.
            with self._lock, suppress(Exception):
                if added := self._additions():
                    pickled = cloudpickle.dumps(added)
                    # A copy, so that the next node sends only what it adds.
                    merge_additions(self._as_sent.get, cloudpickle.loads(pickled))
                    distributed.get_worker().log_event(self._topic, pickled)

    def _additions(self) -> dict[str, dict[str, Any]]:
        """What the copies added to their dict, list and set attributes."""
        found: dict[str, dict[str, Any]] = {}
        for name, plugin in self._plugins.items():
            sent = getattr(self._as_sent[name], "__dict__", {})
            for attribute, value in getattr(plugin, "__dict__", {}).items():
                if (added := _added(sent.get(attribute), value)) is not None:
                    found.setdefault(name, {})[attribute] = added
        return found


@contextmanager
def import_warnings_silenced() -> Iterator[None]:
    """Also for libraries that add their own filters or log warnings on import."""
    captured = logging.getLogger("py.warnings")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.showwarning = lambda *args, **kwargs: None
        captured.disabled = True
        try:
            yield
        finally:
            captured.disabled = False


def merge_additions(
    plugin_named: Callable[[str], Any], additions: Mapping[str, Mapping]
) -> None:
    for name, attributes in additions.items():
        plugin = plugin_named(name)
        for attribute, added in attributes.items():
            _merge(getattr(plugin, attribute, None), added)


@contextmanager
def mlflow_runs_left_open() -> Iterator[None]:
    """Drops MLflow runs node hooks left open in this thread (the driver ends them): the
    thread outlives the run, so the next run's ``start_run`` would find one active."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    depth = len(fluent._active_run_stack.get()) if fluent else 0
    try:
        yield
    finally:
        if fluent := sys.modules.get("mlflow.tracking.fluent"):
            del fluent._active_run_stack.get()[depth:]


def _added(before: Any, after: Any) -> Any:
    """New or changed dict keys (deeply), appended list items, new set items, or None."""
    with suppress(Exception):  # values that cannot be compared are not merged
        if isinstance(after, Mapping):
            before = before if isinstance(before, Mapping) else {}
            found = {}
            for key, value in after.items():
                if key in before and _equal(before[key], value):
                    continue  # most keys, once a node has sent them: compared in C
                if key in before and isinstance(value, Mapping):
                    if (deeper := _added(before[key], value)) is not None:
                        found[key] = deeper
                elif key not in before or value != before[key]:
                    found[key] = value
            return found or None
        if isinstance(after, list) and isinstance(before, list):
            if after[: len(before)] == before and len(after) > len(before):
                return after[len(before) :]
        if isinstance(after, set) and isinstance(before, set):
            return after - before or None
    return None


def _equal(first: Any, second: Any) -> bool:
    try:
        return bool(first == second)
    except Exception:  # e.g. numpy arrays: the walk above looks further
        return False


def _merge(target: Any, added: Any) -> None:
    if isinstance(target, MutableMapping):
        for key, value in added.items():
            if isinstance(value, Mapping) and isinstance(target.get(key), Mapping):
                _merge(target[key], value)
            else:
                target[key] = value
    elif isinstance(target, list):
        target.extend(added)
    elif isinstance(target, set):
        target.update(added)


def _pickled(plugins: dict[str, Any]) -> bytes:
    with suppress(Exception):
        return cloudpickle.dumps(plugins)
    problems, ways = [], set()
    for name, plugin in plugins.items():
        if problem := unpicklable(plugin):
            # pluggy names by id() a plugin registered unnamed: the settings.HOOKS
            own, kind = name == str(id(plugin)), type(plugin)
            ways.add(_YOUR_HOOKS if own else _INSTALLED_PLUGIN)
            named = "" if own else f"plugin '{name}', "
            problems.append(f"{kind.__module__}.{kind.__qualname__} ({named}{problem})")
    raise DaskSetupError(
        f"These Kedro hooks cannot be pickled for the Dask workers, which fire their "
        f"node and dataset hooks: {'; '.join(problems)}. {' '.join(sorted(ways))} "
        f"Or set dask_client.processes: false."
    )


_YOUR_HOOKS = (
    "In your hooks (settings.HOOKS), create locks, connections and clients inside the "
    "hook method, or leave them out of the pickle with __getstate__ and __setstate__."
)
_INSTALLED_PLUGIN = (
    "Disable an installed plugin's hooks with DISABLE_HOOKS_FOR_PLUGINS in settings.py."
)
