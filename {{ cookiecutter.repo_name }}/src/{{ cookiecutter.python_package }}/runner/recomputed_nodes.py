"""Nodes Dask computes a second time: their saves and hooks happen once.

Dask recomputes a finished node whose in-memory outputs were lost with their
worker. The scheduler marks that task (``MarkRecomputed``), so that the node's
new worker recomputes the outputs without saving the node's datasets or firing
its hooks again (``node_task``). The plugin travels by value: the scheduler may
not have the project's package.
"""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle
import distributed
from distributed.diagnostics.plugin import SchedulerPlugin

#: The annotation the scheduler gives a node task it computes again.
RECOMPUTED = "kedro-recomputed"


class MarkRecomputed(SchedulerPlugin):
    """On the scheduler: marks a node task that finished and lost its result
    with its worker, as Dask sends it to be computed again. Registered once per
    cluster (its name)."""

    name = "kedro-mark-recomputed-nodes"
    idempotent = True

    async def start(self, scheduler: distributed.Scheduler) -> None:
        self._tasks = scheduler.tasks

    def transition(self, key: Any, start: str, finish: str, *_: Any, **__: Any) -> None:
        if (start, finish) != ("memory", "released"):
            return
        task = self._tasks.get(key)
        function = getattr(task.run_spec, "func", None) if task else None
        if getattr(function, "__name__", None) == "run_node_task":
            task.annotations = {**(task.annotations or {}), RECOMPUTED: True}


def recomputing() -> bool:
    """In a node task: whether the scheduler marked it as computed again."""
    worker = distributed.get_worker()
    task = worker.state.tasks.get(worker.get_current_task())
    return bool(task is not None and (task.annotations or {}).get(RECOMPUTED))


cloudpickle.register_pickle_by_value(sys.modules[__name__])
