"""``no_worker_timeout``: stops a run that no worker will go on with: none connected or
all paused over their memory limit for that long, a cluster manager that started none,
or workers that kept dying under a node (Dask's ``KilledWorker``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import dask.utils
import distributed
from distributed.core import Status

from .errors import one_line

_OR_WAIT_LONGER = "or raise dask_client.no_worker_timeout."


class WorkerWatch:
    """Whether to stop waiting for workers (a cluster manager does not retry those it
    failed to start). It asks the scheduler with lambdas: pickled by value, as the
    scheduler may lack the project."""

    def __init__(self, client: distributed.Client, limit: float | None) -> None:
        self._client, self._limit = client, limit
        self._seen, self._asked = time.monotonic(), 0.0
        #: What the runner's cluster manager hit starting workers; None: not ours.
        self._errors = getattr(client, "worker_start_errors", None)

    def none_to_come(self, pending: Mapping[Any, Any], total: int) -> str | None:
        """``pending``: the unfinished node futures, with their Kedro nodes."""
        now = time.monotonic()
        if now - self._asked < 1.0:
            return None
        self._asked = now
        able = self._client.run_on_scheduler(
            lambda dask_scheduler: [
                # A node that left its thread (dask collections) waits for others.
                worker.status == Status.running
                or bool(worker.metrics.get("task_counts", {}).get("executing"))
                for worker in dask_scheduler.workers.values()
            ]
        )
        if any(able):
            self._seen = now
            return None
        if not able and (refused := self._none_started()):
            return refused
        if self._limit is None or now - self._seen <= self._limit:
            return None
        if able:  # connected, but all paused
            return (
                f"The Dask workers were all paused, running nothing, for "
                f"{now - self._seen:.0f} s while {len(pending)} of {total} nodes "
                f"waited, so the run was stopped: Dask pauses a worker near its "
                f"memory_limit. Raise dask_client.memory_limit, {_OR_WAIT_LONGER}"
            )
        return self._timed_out(pending, total, now - self._seen)

    def _timed_out(self, pending: Mapping[Any, Any], total: int, seconds: float) -> str:
        if died := self._died_running(pending):
            return (
                f"Dask workers died running Kedro node {', '.join(died)}, and none "
                f"was connected for {seconds:.0f} s after, so the run was stopped. "
                f"Their logs say why: a worker out of memory dies, and one that "
                f"cannot import what a node needs is closed."
            )
        stopped = (
            f"No Dask worker was connected for {seconds:.0f} s while "
            f"{len(pending)} of {total} nodes waited, so the run was stopped"
        )
        if self._errors is None:  # not the runner's cluster
            return (
                f"{stopped}. Start workers for the scheduler at "
                f"{self._client.scheduler.address}, {_OR_WAIT_LONGER}"
            )
        return (
            f"{stopped} and the cluster it started closed. Check that "
            f"dask_client.cluster_kwargs ask for no more than the queue gives "
            f"(squeue shows why a job is PENDING), {_OR_WAIT_LONGER}"
        )

    def _none_started(self) -> str | None:
        """Why a SpecCluster's workers (dask-jobqueue's jobs) all stayed "created"."""
        cluster = self._client.cluster
        tried = list(getattr(cluster, "workers", {}).values())
        if not tried or any(getattr(w, "status", 0) != Status.created for w in tried):
            return None
        error = f" ({one_line(self._errors[-1])})" if self._errors else ""
        closed, options = " and its cluster closed", "dask_client.cluster_kwargs"
        if self._errors is None:  # a cluster this process made, not the runner
            closed, options = "", "the options the cluster was made with"
        return (
            f"{type(cluster).__name__} could not start any of the {len(tried)} "
            f"Dask workers{error}, so the run was stopped{closed}. Check {options}."
        )

    def _died_running(self, pending: Mapping[Any, Any]) -> list[str]:
        """The nodes whose task a worker died running (the scheduler's count)."""
        names = {future.key: node.name for future, node in pending.items()}
        died = self._client.run_on_scheduler(
            lambda keys, dask_scheduler: [
                k for k in keys if getattr(dask_scheduler.tasks.get(k), "suspicious", 0)
            ],
            list(names),
        )
        return sorted(repr(names[key]) for key in died)


def workers_died(node_name: str, error: distributed.scheduler.KilledWorker) -> str:
    """Why Dask gave up on a node whose workers kept dying under it."""
    limit = "no memory_limit"  # the last dead worker's: a live one may not be there
    if memory := error.last_worker.memory_limit:
        limit = f"memory_limit {dask.utils.format_bytes(memory)} per worker"
    return (
        f"Kedro node '{node_name}' was running each time its Dask workers died "
        f"({error}): it likely used more memory than a worker may ({limit}), or "
        f"they could not import what it needs. Raise dask_client.memory_limit or "
        f"lower threads_per_worker; the workers' logs say why each one stopped."
    )
