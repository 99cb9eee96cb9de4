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
        self._names: dict[Any, str] = {}
        for node, key in node_keys.items():
            tagged = [(tag_timeouts[tag], tag) for tag in node.tags & set(tag_timeouts)]
            if tagged:
                self.limits[node.name] = min(tagged)
                self._names[key] = node.name
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    @contextlib.contextmanager
    def running(self, client: distributed.Client, run_token: str) -> Iterator[None]:
        if not self.limits:
            yield
            return

        def started(event: tuple[float, dict[str, Any]]) -> None:
            if event[1]["run"] == run_token:  # another run's, on a shared cluster
                self._started.setdefault(event[1]["node"], time.monotonic())

        name = f"kedro-node-starts-{run_token}"
        client.subscribe_topic(TOPIC, started)
        client.register_plugin(_AnnounceStarts(run_token, self._names), name=name)
        try:
            yield
        finally:
            if client.status == "running":
                client.unsubscribe_topic(TOPIC)
                with contextlib.suppress(Exception):  # not over the run's error
                    client.unregister_worker_plugin(name)

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
    """On a worker: tells the driver when a limited node's task starts."""

    def __init__(self, run_token: str, names: dict[Any, str]) -> None:
        self.run_token, self.names = run_token, names

    def setup(self, worker: distributed.Worker) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and (node := self.names.get(key)) is not None:
            self.worker.log_event(TOPIC, {"run": self.run_token, "node": node})


# Workers that join later unpickle the plugin before the project reaches them.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
