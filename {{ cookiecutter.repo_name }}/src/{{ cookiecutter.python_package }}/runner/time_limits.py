"""Per-node time limits: ``dask_client.tag_timeouts``.

A limit counts from the moment the node starts on its worker, not from when it
was submitted (it may wait behind other nodes). Only nodes with a limit tell the
driver that they started, as a worker event of one topic tagged with the run's
token; the driver times them with its own clock.

Python cannot stop a thread: a node past its limit is cancelled and the run
fails, but the worker thread running it stays busy until the node returns. The
runner stops the workers of a LocalCluster it started with the run; a worker of
a cluster that was already running must be restarted if the node never returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import distributed
from kedro.pipeline.node import Node

TOPIC = "kedro-node-started"


def time_limits(
    nodes: list[Node], tag_timeouts: Mapping[str, float]
) -> dict[str, tuple[float, str]]:
    """``(seconds, tag)`` of the smallest limit of each node's tags, by node name."""
    limits = {}
    for node in nodes:
        tagged = [(tag_timeouts[tag], tag) for tag in node.tags & set(tag_timeouts)]
        if tagged:
            limits[node.name] = min(tagged)
    return limits


def announce_start(run_token: str, node_name: str) -> None:
    """On a worker: tells the driver of ``run_token`` that the node has started."""
    distributed.get_worker().log_event(TOPIC, {"run": run_token, "node": node_name})


class NodeClock:
    """On the driver: when each limited node of one run started."""

    def __init__(self, limits: dict[str, tuple[float, str]]) -> None:
        self.limits = limits
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    @contextmanager
    def running(self, client: distributed.Client, run_token: str) -> Iterator[None]:
        if not self.limits:
            yield
            return

        def started(event: tuple[float, dict[str, Any]]) -> None:
            _, fields = event
            if fields.get("run") == run_token:  # another run's, on a shared cluster
                self._started.setdefault(fields["node"], time.monotonic())

        client.subscribe_topic(TOPIC, started)
        try:
            yield
        finally:
            if client.status == "running":
                client.unsubscribe_topic(TOPIC)

    def finished(self, name: str) -> None:
        """Stops timing a node that has finished."""
        if name in self.limits:
            self._finished.add(name)

    def overdue(self) -> tuple[str, float, str] | None:
        """A started node that has not finished and is past its limit:
        ``(name, seconds, tag)``. Costs time per limited node only: the driver
        asks between completions."""
        now = time.monotonic()
        for name, began in list(self._started.items()):  # the loop thread adds
            seconds, tag = self.limits[name]
            if now - began > seconds and name not in self._finished:
                return name, seconds, tag
        return None
