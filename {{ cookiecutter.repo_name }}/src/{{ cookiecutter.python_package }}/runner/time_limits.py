"""Per-node time limits (``dask_client.tag_timeouts``), from the node's start on its
worker. Python cannot stop a thread: an overdue node fails the run, but its worker
thread stays busy until it returns."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import distributed

from .log_forwarding import subscribed

if TYPE_CHECKING:
    from kedro.pipeline.node import Node

TOPIC = "kedro-node-started"


class NodeClock:
    """On the driver: one run's limited nodes, and when each started."""

    def __init__(
        self, nodes: Iterable[Node], tag_timeouts: Mapping[str, float]
    ) -> None:
        #: ``(seconds, tag)`` of the smallest limit of each node's tags, by name.
        self.limits: dict[str, tuple[float, str]] = {}
        for node in nodes:
            tagged = [(tag_timeouts[tag], tag) for tag in node.tags & set(tag_timeouts)]
            if tagged:
                self.limits[node.name] = min(tagged)
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()

    @contextlib.contextmanager
    def running(self, client: distributed.Client, run_token: str) -> Iterator[None]:
        """Hears the starts ``announce_start`` sends from the workers."""

        def started(event: tuple[float, dict[str, Any]]) -> None:
            if event[1]["run"] == run_token:  # another run's, on a shared cluster
                self._started.setdefault(event[1]["node"], time.monotonic())

        with subscribed(client, TOPIC, started) if self.limits else nullcontext():
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


def announce_start(run_token: str, node_name: str) -> None:
    """In a limited node's task, as it starts: the driver's clock starts then."""
    distributed.get_worker().log_event(TOPIC, {"run": run_token, "node": node_name})
