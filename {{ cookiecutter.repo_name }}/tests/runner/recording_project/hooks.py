"""Hooks that append one line per call to the file named by $RECORDING_HOOKS_LOG.

Appends of short lines are atomic, so hooks firing in several worker processes
at once write whole lines.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, defaultdict
from typing import Any

import numpy as np
from kedro.framework.hooks import hook_impl

LOG_VARIABLE = "RECORDING_HOOKS_LOG"


def _record(*fields: str) -> None:
    path = os.environ.get(LOG_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write("\t".join(fields) + "\n")


class RecordingHooks:
    @hook_impl
    def before_node_run(self, node):
        _record("before_node_run", node.name)

    @hook_impl
    def after_node_run(self, node):
        _record("after_node_run", node.name)

    @hook_impl
    def on_node_error(self, node, error):
        _record("on_node_error", node.name, type(error).__name__)

    @hook_impl
    def before_dataset_loaded(self, dataset_name, node):
        _record("before_dataset_loaded", node.name, dataset_name)

    @hook_impl
    def after_dataset_loaded(self, dataset_name, node):
        _record("after_dataset_loaded", node.name, dataset_name)

    @hook_impl
    def before_dataset_saved(self, dataset_name, node):
        _record("before_dataset_saved", node.name, dataset_name)

    @hook_impl
    def after_dataset_saved(self, dataset_name, node):
        _record("after_dataset_saved", node.name, dataset_name)


class StatefulPlugin:
    """Keeps state from one hook to the next, as kedro-mlflow and kedro-viz do:
    ``run_name`` is set by a run-level hook, the node and dataset hooks read it
    and collect into a dict, a list and a set, summarised after the run."""

    def __init__(self) -> None:
        self.run_name: str | None = None
        self.seen: dict[str, tuple] = {}
        self.loaded: list[str] = []
        self.finished: set[str] = set()

    @hook_impl
    def before_node_run(self, node):
        setting = os.environ.get("STATEFUL_PLUGIN_SETTING")
        self.seen[node.name] = (self.run_name, setting)

    @hook_impl
    def after_dataset_loaded(self, dataset_name):
        self.loaded.append(dataset_name)

    @hook_impl
    def after_node_run(self, node):
        self.finished.add(node.name)

    def summary(self) -> tuple:
        return self.seen, sorted(self.loaded), self.finished


class CollectingPlugin:
    """Collects as plugins do: lists and sets in dicts, a Counter, counts in dicts,
    arrays as dict values, an attribute a node hook makes, one list under two names."""

    def __init__(self) -> None:
        self.calls: defaultdict[str, list[str]] = defaultdict(list)
        self.datasets: dict[str, set[str]] = {"loaded": set()}
        self.counts: Counter[str] = Counter()
        self.samples: dict[str, np.ndarray] = {}
        self.events: list[str] = []
        self.same_events = self.events
        self.totals: dict[str, Any] = {"nodes": 0, "deep": {"seconds": 0.0}}
        self.processes: set[int] = set()

    @hook_impl
    def before_node_run(self, node):
        self.calls["before_node_run"].append(node.name)
        self.counts["nodes"] += 1
        self.totals["nodes"] += 1
        self.processes.add(os.getpid())
        self.totals["deep"]["seconds"] += 0.5
        self.samples[node.name] = np.arange(3)
        self.events.append(node.name)
        if not hasattr(self, "made_by_a_node"):
            self.made_by_a_node: dict[str, list[str]] = {"nodes": []}
        self.made_by_a_node["nodes"].append(node.name)

    @hook_impl
    def after_dataset_loaded(self, dataset_name):
        self.datasets["loaded"].add(dataset_name)

    def summary(self) -> dict:
        return {
            "calls": sorted(self.calls["before_node_run"]),
            "datasets": self.datasets,
            "counts": dict(self.counts),
            "totals": self.totals,
            "samples": {name: list(array) for name, array in self.samples.items()},
            "events": sorted(self.events),
            "one list": self.same_events is self.events,
            "made by a node": sorted(
                getattr(self, "made_by_a_node", {}).get("nodes", [])
            ),
        }


class LockKeepingPlugin:
    """Keeps what cannot be pickled: it stays on the workers, and costs only itself."""

    def __init__(self) -> None:
        self.locks: dict[str, Any] = {}

    @hook_impl
    def before_node_run(self, node):
        self.locks[node.name] = threading.Lock()


class UnpicklablePlugin:
    """A plugin with node hooks and a lock: it cannot be copied to a worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    @hook_impl
    def before_node_run(self, node):
        pass


class CatalogReadingPlugin:
    """Loads from the hooks' catalog what the node does not take, as a project hook
    may: the run's parameters and persisted datasets no node uses."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.read: dict[str, tuple] = {}

    @hook_impl
    def before_node_run(self, node, catalog):
        self.read[node.name] = tuple(catalog.load(name) for name in self.names)
