"""Node and dataset hooks fire where the node runs: workers fire them on copies of the
plugins pickled after ``before_pipeline_run``, and what the copies add to plugin state
(dict, list, set attributes) is sent back as each node ends, and merged into the
driver's plugins before ``after_pipeline_run``."""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import cloudpickle
import distributed
from kedro.framework.hooks.specs import DatasetSpecs, NodeSpecs
from kedro.io import AbstractDataset, CatalogProtocol, DataCatalog, MemoryDataset
from pluggy import PluginManager

from .errors import DaskSetupError, pickled_each, unpicklable, unpickled_each
from .kedro_internals import _create_hook_manager

#: The hooks Kedro fires where a node runs.
NODE_HOOKS = frozenset(
    name for name in {*vars(NodeSpecs), *vars(DatasetSpecs)} if not name.startswith("_")
)
#: For the node hooks' catalog: parameters and persisted datasets, and lazy ones.
HookDatasets = tuple[dict[str, AbstractDataset], dict[str, Any]]
#: What a node's plugin copies changed, by plugin and attribute, each pickled alone.
SentAdditions = dict[str, dict[str, bytes]]


@dataclass(frozen=True)
class WorkerHooks:
    #: The plugins that implement node or dataset hooks, by name, pickled.
    plugins: bytes | None
    #: Variables set (or removed: None) on the driver since the runner was created.
    environment: Mapping[str, str | None]
    #: The plugins' modules, which workers must import to unpickle them.
    modules: frozenset[str] = frozenset()


@functools.cache
def environment_at_start() -> dict[str, str]:
    """This process's environment as its first DaskRunner was made, which a
    LocalCluster's workers start with: each run sets on the workers what differs
    from it then (plugins set MLflow's variables), and undoes it afterwards."""
    return dict(os.environ)


def worker_hooks(hook_manager: Any) -> WorkerHooks | None:
    """The run's plugins and environment for the workers; None if nothing to send."""
    managed = isinstance(hook_manager, PluginManager)
    plugins = {
        name: plugin
        for name, plugin in (hook_manager.list_name_plugin() if managed else ())
        if NODE_HOOKS & {c.name for c in hook_manager.get_hookcallers(plugin) or ()}
    }
    before = environment_at_start()
    environment: dict[str, str | None] = {
        n: v for n, v in os.environ.items() if before.get(n) != v
    }
    environment.update({n: None for n in before if n not in os.environ})
    if not plugins and not environment:
        return None
    modules = frozenset(type(plugin).__module__ for plugin in plugins.values())
    return WorkerHooks(_pickled(plugins) if plugins else None, environment, modules)


def datasets_for_hooks(
    catalog: CatalogProtocol, on_workers: Collection[str]
) -> HookDatasets:
    """What node hooks find in the run's catalog under SequentialRunner, but the
    nodes' in-memory data, which is on other workers. Lazy ones travel as
    configurations."""
    if not isinstance(catalog, DataCatalog):
        return {}, {}
    return {
        name: dataset
        for name, dataset in catalog._datasets.items()
        if not isinstance(dataset, MemoryDataset)
        or name not in on_workers
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
            # Under a lock: nodes in other threads add and send too. Each attribute
            # is pickled alone: one that cannot be is not sent, and costs only itself.
            with self._lock, suppress(Exception):
                sent: SentAdditions = {}
                for name, attributes in self._additions().items():
                    if pickled := pickled_each(attributes):
                        sent[name] = pickled
                if sent:
                    merge_additions(self._as_sent.get, sent)  # sent: not sent again
                    distributed.get_worker().log_event(self._topic, sent)

    def _additions(self) -> dict[str, dict[str, Any]]:
        """How the copies' dict, list and set attributes changed (``_added``)."""
        found: dict[str, dict[str, Any]] = {}
        for name, plugin in self._plugins.items():
            sent = getattr(self._as_sent[name], "__dict__", {})
            for attribute, value in getattr(plugin, "__dict__", {}).items():
                if not isinstance(value, (Mapping, list, set)):
                    continue
                with suppress(Exception):  # state that cannot be compared stays here
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


def merge_additions(plugin_named: Callable[[str], Any], sent: SentAdditions) -> None:
    """Merges what ``HooksOnWorker`` sent into the named plugins: state reached by two
    names (two attributes or plugins holding one list) is merged once."""
    merged: set[int] = set()
    for name, attributes in sent.items():
        if (state := getattr(plugin_named(name), "__dict__", None)) is not None:
            _merge(state, unpickled_each(attributes), merged)


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


def _added(before: Any, after: Any) -> tuple[str, Any] | None:
    """How ``after`` grew from ``before``: ``("new", after)`` if ``before`` was not
    there, ``("merge", {key: change})`` for a mapping, ``("extend", items)`` appended
    to a list, ``("update", items)`` new in a set, ``("add", n)`` to a number in a
    mapping (a ``Counter``'s count), else ``("set", after)``; None if it did not
    change. Removals are not sent."""
    if _equal(before, after):
        return None
    if before is None or before is _ABSENT:
        return ("new", after)
    if isinstance(after, Mapping) and isinstance(before, Mapping):
        found = {}
        for key, value in after.items():
            old = before.get(key, _ABSENT)
            if old is not _ABSENT and _equal(old, value):
                continue  # most keys, once a node has sent them: compared in C
            if old is _ABSENT and isinstance(after, Counter):
                old = 0  # a Counter's missing key counts 0
            if _is_number(value) and _is_number(old):  # counts and totals add up
                found[key] = ("add", value - old)
            elif (change := _added(old, value)) is not None:
                found[key] = change
        return ("merge", found) if found else None
    if isinstance(after, list) and isinstance(before, list):
        if len(after) > len(before) and _equal(after[: len(before)], before):
            return ("extend", after[len(before) :])
    elif isinstance(after, set) and isinstance(before, set):
        return ("update", after - before) if after - before else None
    return ("set", after)


_ABSENT = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_growth(value: Any) -> tuple[str, Any]:
    """A value made on a worker, as what it adds to one made on another."""
    if isinstance(value, Mapping):
        return ("merge", {key: ("new", item) for key, item in value.items()})
    if isinstance(value, list):
        return ("extend", value)
    if isinstance(value, set):
        return ("update", value)
    return ("set", value)


def _equal(first: Any, second: Any) -> bool:
    try:
        return bool(first == second)
    except Exception:  # e.g. numpy arrays: taken as changed
        return False


def _merge(
    target: MutableMapping, changes: Mapping[Any, tuple[str, Any]], merged: set[int]
) -> None:
    for key, change in changes.items():
        current = target.get(key)
        kind, value = change
        if kind == "new" and current is not None:  # made on another worker too
            kind, value = _as_growth(value)
        if kind in ("set", "new"):
            target[key] = value
        elif kind == "add":
            target[key] = (current or 0) + value
        elif id(current) not in merged:  # else reached by another name: merged once
            merged.add(id(current))
            if kind == "merge" and isinstance(current, MutableMapping):
                _merge(current, value, merged)
            elif kind == "extend" and isinstance(current, list):
                current.extend(value)
            elif kind == "update" and isinstance(current, set):
                current.update(value)


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
