"""Marks node tasks Dask runs again, for ``node_task``: ``RECOMPUTED`` if its outputs
died with their worker, ``INTERRUPTED`` if its worker died running it or it is retried.
Pickled by value: the scheduler may not have the project's package."""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle
import distributed
from distributed.diagnostics.plugin import SchedulerPlugin

RECOMPUTED = "kedro-recomputed"
INTERRUPTED = "kedro-interrupted"


class MarkRecomputed(SchedulerPlugin):
    """Marks a node task whose result was lost (memory -> released), or that left
    a worker unfinished (processing -> released or, to retry it, waiting)."""

    name = "kedro-mark-recomputed-nodes"
    idempotent = True

    async def start(self, scheduler: distributed.Scheduler) -> None:
        self._tasks = scheduler.tasks

    def transition(self, key: Any, start: str, finish: str, *_: Any, **__: Any) -> None:
        if start == "memory" and finish == "released":
            mark = RECOMPUTED
        elif start == "processing" and finish in ("released", "waiting"):
            mark = INTERRUPTED
        else:
            return
        task = self._tasks.get(key)
        function = getattr(task.run_spec, "func", None) if task else None
        if getattr(function, "__name__", None) == "run_node_task":
            task.annotations = {**(task.annotations or {}), mark: True}


def marks() -> dict[str, Any]:
    """In a node task: the marks the scheduler gave it (its annotations)."""
    worker = distributed.get_worker()
    task = worker.state.tasks.get(worker.get_current_task())
    return (task.annotations if task is not None else None) or {}


cloudpickle.register_pickle_by_value(sys.modules[__name__])
