"""The LocalCluster the runner starts when ``dask_client`` names none, as fast as a
Kedro run wants: workers fork from a process that imported the project once
(``worker_imports``), and get half a second to exit after a failure."""

from __future__ import annotations

import ast
import asyncio
import atexit
import contextlib
import functools
import gc
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask.config
import distributed
import psutil
from dask.utils import format_bytes
from distributed.diagnostics.plugin import WorkerPlugin

from .errors import DaskSetupError
from .log_forwarding import WORKER_START_LOGGING, quiet, quiet_before_closing
from .run_setup import set_environment

#: Not Dask's ":8787" (every interface): anyone could read task names, logs, stacks.
LOCAL_DASHBOARD = "127.0.0.1:8787"
_LOOPBACK_FREE_PORT = "127.0.0.1:0"
_START_METHOD = "distributed.worker.multiprocessing-method"


def local_cluster_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    # silence_logs=False: conf/logging.yml decides.
    kwargs = {"silence_logs": False, "dashboard_address": LOCAL_DASHBOARD, **kwargs}
    # With no address Dask serves /health on every interface: the scheduler's, and
    # workers' in threads (forked ones listen on 127.0.0.1).
    if kwargs["dashboard_address"] is None:
        kwargs["scheduler_kwargs"] = {
            "dashboard_address": _LOOPBACK_FREE_PORT,
            **kwargs.get("scheduler_kwargs", {}),
        }
    if kwargs.get("processes") is False:
        if kwargs.get("worker_dashboard_address") is None:
            kwargs["worker_dashboard_address"] = _LOOPBACK_FREE_PORT
        return kwargs
    # Forked workers start with the forkserver's (maybe older) environment.
    kwargs["env"] = {**os.environ, **kwargs.get("env", {})}
    kwargs["plugins"] = {*kwargs.get("plugins", ()), _ExitWithoutFinalCollection()}
    return kwargs


def check_worker_memory(cluster: distributed.LocalCluster) -> None:
    """Refuses a memory_limit that a worker exceeds as it starts: its nanny would
    restart it, as large, for ever; one in this process (``processes: false``) would
    pause at once. (One paused later is ``worker_watch``'s.)"""
    budgets, pids = [], []
    for worker in cluster.workers.values():
        memory, nanny = worker.memory_manager, isinstance(worker, distributed.Nanny)
        share = (
            memory.memory_terminate_fraction if nanny else memory.memory_pause_fraction
        )
        if memory.memory_limit and share:
            budgets.append((memory.memory_limit, share))
        # Workers the nanny has restarted already hold at least what they fork from.
        pids += [worker.pid, _forkserver_pid()] if nanny else [os.getpid()]
    if not budgets:
        return
    limit, share = min(budgets)
    started = 0
    for pid in set(filter(None, pids)):
        with contextlib.suppress(psutil.Error):  # restarted meanwhile
            started = max(started, psutil.Process(pid).memory_info().rss)
    if started > share * limit:
        raise DaskSetupError(
            f"Each Dask worker holds {format_bytes(started)} as it starts, over "
            f"{share:.0%} of its memory_limit of {format_bytes(limit)}: no node could "
            "run. Raise dask_client.memory_limit, e.g. to 4GB, or lower n_workers."
        )


def _forkserver_pid() -> int | None:
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None)


def start_worker_forkserver() -> None:
    """Imports the project while Kedro loads it; the caller holds Ctrl-C back (workers
    must be born with it blocked). Sets the nanny's pre-spawn variables (read only as
    a library loads) and ``sys.path`` (Python 3.11's forkserver drops it)."""
    variables = dask.config.get("distributed.nanny.pre-spawn-environ")
    path = [*filter(None, sys.path), os.environ.get("PYTHONPATH", "")]
    environment = {
        **{n: os.environ.get(n, str(v)) for n, v in variables.items() if v is not None},
        "PYTHONPATH": os.pathsep.join(path).rstrip(os.pathsep),
    }
    with worker_processes_environment(environment) as forks:
        if forks:
            distributed.utils.get_mp_context().set_forkserver_preload(
                ["distributed", "numpy", "pandas", f"{__package__}.worker_imports"]
            )
            multiprocessing.forkserver.ensure_running()


@contextlib.contextmanager
def worker_processes_environment(extra: dict[str, str] | None = None) -> Iterator[bool]:
    """The workers' environment, kept for the cluster's whole life (a dead worker is
    restarted). Yields whether they fork from the forkserver."""
    forks = dask.config.get(_START_METHOD) in ("spawn", "forkserver")
    forks = forks and "forkserver" in multiprocessing.get_all_start_methods()
    level = logging.getLogger("distributed").getEffectiveLevel()
    environment = {
        "DASK_LOGGING__DISTRIBUTED": logging.getLevelName(level).lower(),
        "KEDRO_LOGGING_CONFIG": str(_worker_logging_file()),
    }
    saved = set_environment({**environment, **(extra or {})})
    try:
        with dask.config.set({_START_METHOD: "forkserver"} if forks else {}):
            yield forks
    finally:
        set_environment(saved)


def check_not_a_worker_starting() -> None:
    """A worker process re-runs a script that lacks a ``__main__`` guard."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # starting
        raise DaskSetupError(
            "A Dask worker process is starting a Kedro run: the script that runs "
            'the session needs `if __name__ == "__main__":` around the run.'
        )


def unguarded_script() -> str | None:
    """This process's script if it lacks a ``__main__`` guard (workers re-run it)."""
    script = getattr(sys.modules["__main__"], "__file__", None)
    with contextlib.suppress(OSError, SyntaxError, ValueError, TypeError):
        if not any(
            isinstance(statement, ast.If) and "__main__" in ast.unparse(statement.test)
            for statement in ast.parse(Path(script).read_text()).body  # type: ignore[arg-type]
        ):
            return script
    return None


def close_workers_quietly(
    cluster: Any, client: distributed.Client
) -> Callable[..., None]:
    """Silences the workers as they close (a heartbeat racing the scheduler's close
    is not the run's news) and, after Ctrl-C or a failure, gives them half a second
    to exit instead of Dask's 4 s wait for tasks nobody wants any more."""

    async def close(nannies: list[distributed.Nanny]) -> None:
        await asyncio.gather(*(nanny.close(timeout=0.5) for nanny in nannies))

    def on_exit(exc_type: type[BaseException] | None, *_: object) -> None:
        workers = getattr(cluster, "workers", {}).values()
        nannies = [w for w in workers if isinstance(w, distributed.Nanny)]
        if not nannies:
            return
        with contextlib.suppress(Exception):
            client.run(quiet_before_closing)
        if exc_type is not None:
            with quiet("distributed.nanny"), contextlib.suppress(Exception):
                cluster.sync(close, nannies)

    return on_exit


class _ExitWithoutFinalCollection(WorkerPlugin):
    """Skips Python's final garbage collection in a worker process of all that nodes
    imported: the memory goes back with the process."""

    def teardown(self, worker: distributed.Worker) -> None:
        gc.freeze()


@functools.cache
def _worker_logging_file() -> Path:
    """Kept for this process's life: the forkserver keeps its first environment, so
    workers of a later run read this path too."""
    path = Path(tempfile.mkdtemp(prefix="kedro-dask-")) / "worker-logging.yml"
    atexit.register(_remove_after_the_forkserver, path.parent)
    path.write_text(WORKER_START_LOGGING)
    return path


def _remove_after_the_forkserver(folder: Path) -> None:
    """The forkserver may still import the project (reading the file) after a run
    that failed before its cluster started."""
    if pid := _forkserver_pid():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    shutil.rmtree(folder, ignore_errors=True)
