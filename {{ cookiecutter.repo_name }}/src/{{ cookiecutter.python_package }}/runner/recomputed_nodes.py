"""Dask recomputes a finished node whose in-memory outputs died with their worker:
the scheduler marks the task (``MarkRecomputed``), so ``node_task`` skips its saves
and hooks. Pickled by value: the scheduler may not have the project's package.
"""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle
import distributed
from distributed.diagnostics.plugin import SchedulerPlugin

RECOMPUTED = "kedro-recomputed"


class MarkRecomputed(SchedulerPlugin):
    """Marks a node task whose result was lost (memory -> released) for recompute."""

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
    """In a node task: whether the scheduler marked it as recomputed."""
    worker = distributed.get_worker()
    task = worker.state.tasks.get(worker.get_current_task())
    return bool(task is not None and (task.annotations or {}).get(RECOMPUTED))


cloudpickle.register_pickle_by_value(sys.modules[__name__])
