"""Per-node time limits (``dask_client.tag_timeouts``), from the node's start on its
worker. Python cannot stop a thread: an overdue node fails the run, but its worker
thread stays busy until it returns."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import cloudpickle
import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from .log_forwarding import registered, subscribed

if TYPE_CHECKING:
    from kedro.pipeline.node import Node

TOPIC = "kedro-node-started"


class NodeClock:
    """On the driver: one run's limited nodes, and when each started."""

    def __init__(
        self, node_keys: Mapping[Node, Any], tag_timeouts: Mapping[str, float]
    ) -> None:
        #: ``(seconds, tag)`` of the smallest limit of each node's tags, by name.
        self.limits: dict[str, tuple[float, str]] = {}
        #: The Dask keys of the limited nodes' tasks, with the nodes' names.
        self._keys: dict[Any, str] = {}
        for node, key in node_keys.items():
            tagged = [(tag_timeouts[tag], tag) for tag in node.tags & set(tag_timeouts)]
            if tagged:
                self.limits[node.name], self._keys[key] = min(tagged), node.name
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    @contextlib.contextmanager
    def running(self, client: distributed.Client, run_token: str) -> Iterator[None]:
        """Has the workers announce the limited nodes' starts, and hears them."""
        if not self.limits:
            yield
            return

        def started(event: tuple[float, dict[str, Any]]) -> None:
            self._started.setdefault(event[1]["node"], time.monotonic())

        topic = f"{TOPIC}-{run_token}"
        with (
            subscribed(client, topic, started),
            registered(client, _AnnounceStarts(self._keys, topic), topic),
        ):
            yield

    def finished(self, name: str) -> None:
        if name in self.limits:
            self._finished.add(name)

    def overdue(self) -> str | None:
        """Why the run must stop, if an unfinished node is past its limit."""
        now = time.monotonic()
        for name, began in list(self._started.items()):  # the loop thread adds
            seconds, tag = self.limits[name]
            if now - began > seconds and name not in self._finished:
                return (
                    f"Kedro node '{name}' ran longer than {seconds:g} s, the limit "
                    f"dask_client.tag_timeouts gives its tag '{tag}'. Raise the limit "
                    "if the node needs longer; restart its worker if it never returns."
                )
        return None


class _AnnounceStarts(WorkerPlugin):
    """On each worker, late joiners too: tells the driver as a limited node's task
    starts executing. Pickled by value: the cluster may lack the project."""

    def __init__(self, keys: dict[Any, str], topic: str) -> None:
        self.keys, self.topic = keys, topic

    def setup(self, worker: distributed.Worker) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and key in self.keys:
            self.worker.log_event(self.topic, {"node": self.keys[key]})


cloudpickle.register_pickle_by_value(sys.modules[__name__])
