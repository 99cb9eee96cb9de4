"""Opening and closing the Dask cluster of a run.

The runner closes exactly what it opened: a cluster it started and the client it
connected, never a scheduler that was already running or a client it was handed.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import logging
import os
import signal
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dask.config
import distributed
from distributed.diagnostics.plugin import SchedulerUploadFile, UploadFile, WorkerPlugin

from .client_config import DaskClientConfig, DaskSetupError
from .log_forwarding import quiet_before_closing, this_process

logger = logging.getLogger(__name__)

# Dask's configuration of its own log level, read when a process imports it.
_DASK_LOG_LEVEL = "DASK_LOGGING__DISTRIBUTED"


@contextmanager
def dask_client(
    config: DaskClientConfig, package_name: str | None
) -> Iterator[distributed.Client]:
    """Yields a client for the configured cluster and closes what it opened."""
    with ExitStack() as opened:
        address = _scheduler_address(config)
        active = None if config.starts_cluster else _active_client()
        if address:
            logger.info("Connecting to the Dask scheduler at %s", address)
            client = opened.enter_context(_connect(address, config))
        elif active is not None:
            client = active
            logger.info("Using this process's Dask client %s", client)
        else:
            cluster = opened.enter_context(_start_cluster(config))
            client = opened.enter_context(_connect(cluster, config))
            opened.push(_quiet_workers_if_the_run_failed(client))
        if _should_upload(config, address) and package_name:
            _upload_package(client, package_name)
        yield client


def _scheduler_address(config: DaskClientConfig) -> str | None:
    if config.address or config.starts_cluster:
        return config.address
    # Dask's own setting, e.g. the DASK_SCHEDULER_ADDRESS environment variable.
    return dask.config.get("scheduler-address", None)


def _active_client() -> distributed.Client | None:
    try:
        return distributed.default_client()
    except ValueError:
        return None


def _start_cluster(config: DaskClientConfig) -> Any:
    factory = config.cluster_factory()
    name = f"{factory.__module__}.{factory.__qualname__}"
    kwargs = dict(config.cluster_kwargs)
    if factory is distributed.LocalCluster:
        # The driver's logging (conf/logging.yml) decides what Dask itself prints.
        kwargs.setdefault("silence_logs", False)
        kwargs["plugins"] = {*kwargs.get("plugins", ()), _ExitWithoutFinalCollection()}
    logger.info("Starting a Dask cluster: %s(%s)", name, _kwargs_text(config))
    try:
        with _local_worker_processes_defer_to_driver():
            cluster = factory(**kwargs)
    except Exception as exc:
        raise DaskSetupError(
            f"Could not start {name} with {_kwargs_text(config) or 'no arguments'}: "
            f"{type(exc).__name__}: {exc}. Check dask_client.cluster_kwargs."
        ) from exc
    if config.adapt is not None:
        try:
            cluster.adapt(**config.adapt)
        except Exception as exc:
            cluster.close()
            raise DaskSetupError(
                f"Could not make {name} adaptive with {config.adapt}: {exc}. "
                f"dask_client.adapt takes the keywords of Cluster.adapt, "
                f"e.g. minimum and maximum."
            ) from exc
    return cluster


@contextmanager
def _local_worker_processes_defer_to_driver() -> Iterator[None]:
    """Worker processes started meanwhile ignore Ctrl-C, which a terminal sends
    to every process: the runner alone stops the run, then closes the cluster in
    order. They also log Dask's own messages at the driver's level for them, so
    their start-up banners don't drown the run's log."""
    level = logging.getLevelName(logging.getLogger("distributed").getEffectiveLevel())
    saved_level = os.environ.get(_DASK_LOG_LEVEL)
    os.environ[_DASK_LOG_LEVEL] = level.lower()
    in_main_thread = threading.current_thread() is threading.main_thread()
    saved_handler = (
        signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    )
    try:
        yield
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, saved_handler)
        if saved_level is None:
            os.environ.pop(_DASK_LOG_LEVEL, None)
        else:
            os.environ[_DASK_LOG_LEVEL] = saved_level


def _kwargs_text(config: DaskClientConfig) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in config.cluster_kwargs.items())


class _Client(distributed.Client):
    """A client that closes itself when it cannot connect. distributed's own does
    so only for OSError; after any other error (e.g. a tls:// address without TLS
    settings) the half-made client is closed at interpreter exit, which waits
    2 x timeout and prints a traceback after the run's error."""

    def start(self, **kwargs: Any) -> None:
        try:
            super().start(**kwargs)
        except Exception:
            with contextlib.suppress(Exception):
                self.close()
            raise


def _connect(target: Any, config: DaskClientConfig) -> distributed.Client:
    try:
        return _Client(
            target,
            timeout=config.timeout,
            security=config.security_object(),
            set_as_default=False,
            **config.client_kwargs,
        )
    except Exception as exc:
        where = target if isinstance(target, str) else "the cluster it started"
        raise DaskSetupError(
            f"Could not connect to the Dask scheduler at {where} within "
            f"{config.timeout:g} s ({type(exc).__name__}: {exc}). Check that the "
            f"scheduler is running and reachable from here, that dask_client.security "
            f"matches a TLS scheduler, or drop `address` (and DASK_SCHEDULER_ADDRESS) "
            f"to run on a local cluster."
        ) from exc


def _quiet_workers_if_the_run_failed(
    client: distributed.Client,
) -> Callable[..., None]:
    """Workers closed while a node still runs (after Ctrl-C or a failure) log
    Dask-internal warnings about the cancelled task; the run has already said
    what happened. After a successful run no task is left to cancel."""

    def on_exit(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            with contextlib.suppress(Exception):
                client.run(quiet_before_closing, this_process())

    return on_exit


class _ExitWithoutFinalCollection(WorkerPlugin):
    """Lets a worker process of a LocalCluster exit as soon as it has closed.

    Python's final garbage collection of everything a node imported (Kedro, pandas,
    distributed) takes ~0.2 s, and closing the cluster waits for it; the memory
    goes back to the system with the process anyway. Workers running as threads of
    the driver's process (``processes: false``) are left alone.
    """

    def __init__(self) -> None:
        self.driver_process = this_process()

    def teardown(self, worker: distributed.Worker) -> None:
        if self.driver_process != this_process():
            gc.freeze()


def _should_upload(config: DaskClientConfig, address: str | None) -> bool:
    """By default, only workers that may not share this machine get the package."""
    if config.upload_project is not None:
        return config.upload_project
    if address:
        return not address.startswith("inproc://")  # workers in this very process
    return (
        config.starts_cluster
        and config.cluster_factory() is not distributed.LocalCluster
    )


def _upload_package(client: distributed.Client, package_name: str) -> None:
    """Sends the project's package to the scheduler (which unpickles the task
    graph) and the workers, which may not have it installed."""
    package_dir = Path(importlib.import_module(package_name).__file__).parent
    with tempfile.TemporaryDirectory() as folder:
        staging = Path(folder) / "package.zip"
        with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in sorted(package_dir.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    # A fixed timestamp: the same code gives the same archive.
                    info = zipfile.ZipInfo(
                        path.relative_to(package_dir.parent).as_posix()
                    )
                    zipped.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        digest = hashlib.sha256(staging.read_bytes()).hexdigest()[:16]
        archive = staging.rename(Path(folder) / f"{package_name}-{digest}.zip")
        logger.info("Uploading the %s package to the Dask cluster", package_name)
        # Named after its content and idempotent: a run of code the cluster
        # already has uploads nothing, and concurrent runs never rewrite an
        # archive another run is importing from.
        for plugin in (
            SchedulerUploadFile(str(archive), load=True),
            UploadFile(str(archive), load=True),
        ):
            plugin.idempotent = True
            client.register_plugin(plugin, name=archive.stem)
