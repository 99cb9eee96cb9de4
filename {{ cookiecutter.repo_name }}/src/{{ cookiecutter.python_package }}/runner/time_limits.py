"""Per-node time limits: ``dask_client.tag_timeouts``.

A limit counts from the moment the node starts on its worker, not from when it
was submitted (it may wait behind other nodes): a worker plugin tells the driver
when a limited node starts, and the driver times it with its own clock.

Python cannot stop a thread: a node past its limit is cancelled and the run
fails, but the worker thread running it stays busy until the node returns. The
runner stops the workers of a LocalCluster it started with the run; a worker of
a cluster that was already running must be restarted if the node never returns.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import cloudpickle
import distributed
from distributed.diagnostics.plugin import WorkerPlugin
from kedro.pipeline.node import Node

TOPIC = "kedro-node-started"


class NodeClock:
    """On the driver: the limit of each limited node of one run, and when each
    of them started."""

    def __init__(self, nodes: list[Node], tag_timeouts: Mapping[str, float]) -> None:
        #: ``(seconds, tag)`` of the smallest limit of each node's tags, by name.
        self.limits: dict[str, tuple[float, str]] = {}
        for node in nodes:
            tagged = [(tag_timeouts[tag], tag) for tag in node.tags & set(tag_timeouts)]
            if tagged:
                self.limits[node.name] = min(tagged)
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    @contextmanager
    def running(self, client: distributed.Client, run_token: str) -> Iterator[None]:
        if not self.limits:
            yield
            return

        def started(event: tuple[float, dict[str, Any]]) -> None:
            if event[1]["run"] == run_token:  # another run's, on a shared cluster
                self._started.setdefault(event[1]["node"], time.monotonic())

        name = f"kedro-node-starts-{run_token}"
        client.subscribe_topic(TOPIC, started)
        client.register_plugin(_AnnounceStarts(run_token, set(self.limits)), name=name)
        try:
            yield
        finally:
            if client.status == "running":
                client.unsubscribe_topic(TOPIC)
                with contextlib.suppress(Exception):  # not over the run's error
                    client.unregister_worker_plugin(name)

    def finished(self, name: str) -> None:
        """Stops timing a node that has finished."""
        if name in self.limits:
            self._finished.add(name)

    def overdue(self) -> str | None:
        """Why the run must stop, if a node that has not finished is past its
        limit."""
        now = time.monotonic()
        for name, began in list(self._started.items()):  # the loop thread adds
            seconds, tag = self.limits[name]
            if now - began > seconds and name not in self._finished:
                return (
                    f"Kedro node '{name}' ran longer than {seconds:g} s, the limit "
                    f"dask_client.tag_timeouts gives its tag '{tag}', so the run was "
                    f"stopped. Raise the limit if the node needs longer. A Dask "
                    f"worker cannot interrupt a running node: on a cluster that was "
                    f"already running, restart the worker if the node never returns."
                )
        return None


class _AnnounceStarts(WorkerPlugin):
    """On a worker: tells the driver of a run when one of its limited nodes
    starts (a node task's key is ``<function>-<run token>-<node name>``; the
    keys of the run's other tasks start with the token)."""

    def __init__(self, run_token: str, nodes: set[str]) -> None:
        self.run_token, self.nodes = run_token, nodes

    def setup(self, worker: distributed.Worker) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing" or not isinstance(key, tuple):
            return
        _, _, node = str(key[0]).partition(f"-{self.run_token}-")
        if node in self.nodes:
            self.worker.log_event(TOPIC, {"run": self.run_token, "node": node})


# Workers that join later unpickle the plugin before the project reaches them.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
