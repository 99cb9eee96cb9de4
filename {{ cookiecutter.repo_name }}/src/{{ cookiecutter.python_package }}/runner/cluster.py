"""Opening and closing the Dask cluster of a run.

The runner closes exactly what it opened: a cluster it started and the client it
connected, never a scheduler that was already running or a client it was handed.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import contextlib
import functools
import gc
import hashlib
import importlib
import ipaddress
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import signal
import sys
import tempfile
import traceback
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
import dask.config
import distributed
import psutil
from distributed.core import Status
from distributed.diagnostics.plugin import SchedulerUploadFile, UploadFile, WorkerPlugin

from . import wheel_install
from .client_config import DaskClientConfig, DaskSetupError
from .interrupts import CtrlCHeldBack
from .log_forwarding import WORKER_FORMAT, quiet_before_closing, this_process

logger = logging.getLogger(__name__)

# Dask's configuration of its own log level, read when a process imports it.
_DASK_LOG_LEVEL = "DASK_LOGGING__DISTRIBUTED"


@contextmanager
def dask_client(
    config: DaskClientConfig, package_name: str | None
) -> Iterator[distributed.Client]:
    """Yields a client for the configured cluster and closes what it opened.

    Ctrl-C is held back while a cluster starts and while everything closes, so
    that neither stops half-way (see ``interrupts``).
    """
    held = CtrlCHeldBack()
    with ExitStack() as opened:
        opened.push(held.__exit__)  # the last step out: a held press is raised
        address = _scheduler_address(config)
        active = None if config.starts_cluster else _active_client()
        if address:
            logger.info("Connecting to the Dask scheduler at %s", address)
            client = opened.enter_context(_connect(address, config))
        elif active is not None:
            client = active
            logger.info("Using this process's Dask client %s", client)
        else:
            with held:
                forks = False
                if config.cluster_factory() is distributed.LocalCluster:
                    forks = opened.enter_context(_worker_processes_environment())
                start_errors = opened.enter_context(_worker_start_errors(config))
                cluster = opened.enter_context(
                    _closed_at_exit(_start_cluster(config, forks))
                )
                client = opened.enter_context(_connect(cluster, config))
                client.worker_start_errors = start_errors
            opened.push(_stop_workers_at_once_if_the_run_failed(cluster, client))
        _log_dashboard(client, started=not address and active is None, config=config)
        opened.callback(held.__enter__)  # the first step out
        if config.install_wheel:
            _install_wheel(client, config)
        elif package_name and (
            config.upload_project
            if config.upload_project is not None
            else not workers_share_this_machine(config)
        ):
            _upload_package(client, package_name)
        yield client


def start_worker_forkserver(config: DaskClientConfig) -> None:
    """Starts now the process that the worker processes of the run's LocalCluster
    will fork from, importing this project's pipelines (``worker_imports``).

    Called while Kedro still loads the project: the imports the workers need
    then run on another core meanwhile, once, instead of in every worker after
    the cluster has started. Ctrl-C is held back while it starts, so that it is
    born with SIGINT blocked, as the workers it forks must be (``interrupts``).
    It gets the variables Dask's nanny sets before it starts a worker (one
    thread for OpenMP and BLAS, ...), which count only when a library loads, and
    this process's ``sys.path`` (Python 3.11's forkserver ignores it).
    """
    if _scheduler_address(config) or config.cluster_kwargs.get("processes") is False:
        return
    if config.cluster_factory() is not distributed.LocalCluster:
        return
    if not config.starts_cluster and _active_client() is not None:
        return
    with (
        CtrlCHeldBack(),
        _worker_processes_environment() as forks,
        _environment(_forkserver_environment()),
    ):
        if forks:
            context = distributed.utils.get_mp_context()
            context.set_forkserver_preload(
                ["distributed", "numpy", "pandas", f"{__package__}.worker_imports"]
            )
            multiprocessing.forkserver.ensure_running()


def _forkserver_environment() -> dict[str, str]:
    """What Dask's nanny puts in the environment before it starts a worker, and
    this process's import path."""
    variables = dask.config.get("distributed.nanny.pre-spawn-environ")
    return {
        **{
            name: os.environ.get(name, str(value))
            for name, value in variables.items()
            if value is not None
        },
        "PYTHONPATH": os.pathsep.join(
            [path for path in sys.path if path] + [os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
    }


def credentials_in_the_clear(
    datasets: list[str], client: distributed.Client
) -> str | None:
    """A warning for a run that would send datasets' credentials over the network
    without TLS: node tasks carry their datasets, credentials included."""
    if not datasets:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    exposed = [a for a in [client.scheduler.address, *workers] if in_the_clear(a)]
    if not exposed:
        return None
    return (
        f"The datasets {', '.join(datasets)} hold credentials, which travel to the "
        f"Dask workers inside their nodes' tasks, and this run reaches "
        f"{exposed[0]}{' and more' if exposed[1:] else ''} over plain "
        f"tcp://: anyone on that network can read them. Use a TLS scheduler "
        f"(tls://) with dask_client.security (tls_ca_file, tls_client_cert, "
        f"tls_client_key), or keep scheduler and workers on this machine."
    )


def workers_failed_to_start(client: distributed.Client) -> str | None:
    """A paragraph when the cluster this run started has tried to start workers
    and every one failed to: its manager does not try again, so no worker would
    ever come (an ``sbatch`` that refuses the job script, for one)."""
    cluster = getattr(client, "cluster", None)
    # A SpecCluster's workers (dask-jobqueue's jobs) that failed to start keep
    # the status they were created with.
    tried = list(getattr(cluster, "workers", {}).values())
    if not tried or any(getattr(w, "status", None) != Status.created for w in tried):
        return None
    errors = getattr(client, "worker_start_errors", [])
    error = f" ({_one_line(errors[-1])})" if errors else ""
    return (
        f"{type(cluster).__name__} could not start any of the {len(tried)} Dask "
        f"workers it tried to{error} and does not try again, so the run was "
        f"stopped and its cluster closed. Check dask_client.cluster_kwargs "
        f"against what the cluster accepts (for a batch queue: the partition or "
        f"queue, memory, cores and walltime a job may ask for)."
    )


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


@contextmanager
def _worker_start_errors(config: DaskClientConfig) -> Iterator[list[BaseException]]:
    """Collects the errors that the cluster manager's own code raises in the
    event loop while the cluster runs. A SpecCluster (dask-jobqueue's, for one)
    starts workers in a callback there, so an ``sbatch`` that refuses a job
    reaches only Tornado's log of failed callbacks, as a long traceback: each
    is logged in one line instead, and kept for the run's error.

    Not for distributed's own clusters: they start their workers before the
    run, and raise what goes wrong there."""
    factory = config.cluster_factory()
    package = factory.__module__.split(".")[0]
    errors: list[BaseException] = []

    def collect(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or not _raised_in(error, package):
            return True
        errors.append(error)
        logger.warning("%s failed: %s", factory.__name__, _one_line(error))
        return False

    tornado_log = logging.getLogger("tornado.application")
    if package != distributed.__name__:
        tornado_log.addFilter(collect)
    try:
        yield errors
    finally:
        tornado_log.removeFilter(collect)


def _raised_in(error: BaseException, package: str) -> bool:
    """Whether ``error`` was raised inside the code of ``package``."""
    return any(
        (frame.f_globals.get("__name__") or "").split(".")[0] == package
        for frame, _ in traceback.walk_tb(error.__traceback__)
    )


def in_the_clear(address: str) -> bool:
    """Whether Dask traffic to ``address`` leaves this machine unencrypted."""
    protocol, _, location = address.partition("://")
    if protocol not in ("tcp", "ws"):  # tls://, wss://, inproc://, ucx://
        return False
    host = distributed.comm.get_address_host(address)
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may be anywhere
        return True


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


@contextmanager
def _closed_at_exit(cluster: Any) -> Iterator[Any]:
    """Closes ``cluster`` after the run. An error of the cluster manager's own
    while closing is logged, not raised over the run's outcome: dask-jobqueue,
    for one, asserts on a job that sbatch refused, after it has cancelled the
    jobs it did submit."""
    try:
        yield cluster
    finally:
        try:
            cluster.close()
        except Exception as exc:
            logger.warning(
                "%s did not close cleanly (%s: %s)",
                type(cluster).__name__,
                type(exc).__name__,
                exc or "no message",
            )


def _what_to_check(error: Exception) -> str:
    if getattr(error, "status", None) in (401, 403):  # an HTTP API (dask-gateway)
        return (
            "The cluster manager refused the credentials: check the user name and "
            "password or token it is given (for dask-gateway, the "
            "DASK_GATEWAY__AUTH__* settings; conf/gateway/parameters.yml)."
        )
    return "Check dask_client.cluster_kwargs."


def _unguarded_script() -> str | None:
    """What to change when the run was started by a script whose run is not
    under ``if __name__ == "__main__":``: a worker process imports the script as
    it starts (Python's multiprocessing), which starts it all again."""
    path = getattr(sys.modules["__main__"], "__file__", None)
    try:
        tree = ast.parse(Path(path).read_text()) if path else None
    except (OSError, SyntaxError, ValueError):
        return None
    if tree is None or any(
        isinstance(statement, ast.If) and "__main__" in ast.unparse(statement.test)
        for statement in tree.body
    ):
        return None
    return (
        f"The worker processes import {path} as they start (Python's "
        f"multiprocessing), which would start this run again: put the code that "
        f'runs the session under `if __name__ == "__main__":`.'
    )


def check_not_a_worker_starting() -> None:
    """Refuses to start a run in a worker process that imports the script of an
    unguarded run (see ``_unguarded_script``), before it makes anything."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise DaskSetupError(
            "A Dask worker process is starting a Kedro run: the script that runs "
            'the session needs `if __name__ == "__main__":` around the run.'
        )


def _start_cluster(config: DaskClientConfig, forks_workers: bool) -> Any:
    factory = config.cluster_factory()
    name = f"{factory.__module__}.{factory.__qualname__}"
    kwargs = dict(config.cluster_kwargs)
    if factory is distributed.LocalCluster:
        # The driver's logging (conf/logging.yml) decides what Dask itself prints.
        kwargs.setdefault("silence_logs", False)
        kwargs["plugins"] = {*kwargs.get("plugins", ()), _ExitWithoutFinalCollection()}
        kwargs.update(_dashboard_on_loopback(kwargs))
        if kwargs.get("processes") is not False and forks_workers:
            # A forked worker inherits the environment the forkserver started
            # with, maybe an earlier run's (a notebook's second run, other
            # variables set): its nanny sets this one before the worker starts.
            kwargs["env"] = {**os.environ, **kwargs.get("env", {})}
    logger.info("Starting a Dask cluster: %s(%s)", name, _kwargs_text(config))
    try:
        cluster = factory(**kwargs)
    except Exception as exc:
        raise DaskSetupError(
            f"Could not start {name} with {_kwargs_text(config) or 'no arguments'}: "
            f"{type(exc).__name__}: {str(exc).rstrip('.')}. "
            f"{_unguarded_script() or _what_to_check(exc)}"
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


#: Where a LocalCluster's dashboard listens unless ``dashboard_address`` says
#: otherwise. Dask's own default, ":8787", is every network interface: anyone who
#: reaches the machine could read task names, logs, call stacks and profiles.
LOCAL_DASHBOARD = "127.0.0.1:8787"


def _dashboard_on_loopback(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The LocalCluster keywords that keep its HTTP server on 127.0.0.1."""
    if "dashboard_address" not in kwargs:
        return {"dashboard_address": LOCAL_DASHBOARD}
    if kwargs["dashboard_address"] is None:
        # No dashboard, but Dask still serves /health and /metrics, by default
        # on every interface.
        scheduler_kwargs = {"dashboard_address": "127.0.0.1:0"}
        return {
            "scheduler_kwargs": {
                **scheduler_kwargs,
                **kwargs.get("scheduler_kwargs", {}),
            }
        }
    return {}


def _log_dashboard(
    client: distributed.Client, started: bool, config: DaskClientConfig
) -> None:
    """Logs the dashboard's link; for a cluster whose scheduler runs in this
    process, with the address it really listens on."""
    scheduler = getattr(client.cluster, "scheduler", None)
    if not started or not isinstance(scheduler, distributed.Scheduler):
        logger.info("Dask dashboard: %s", client.dashboard_link or "none")
        return
    if config.cluster_kwargs.get("dashboard_address", "") is None:
        logger.info("Dask dashboard: none (dask_client.dashboard_address is null)")
        return
    port = client.scheduler_info(n_workers=0)["services"]["dashboard"]
    listening = _listening_hosts(port)
    exposed = set(listening) - _LOOPBACK
    host = sorted(exposed)[0] if exposed else "127.0.0.1"
    logger.info("Dask dashboard: http://%s:%s/status", host, port)
    if exposed:
        logger.warning(
            "The Dask dashboard listens on %s, so anyone who can reach this machine "
            "can see the run's tasks, logs and call stacks. Set "
            "dask_client.dashboard_address to %s to keep it on this machine.",
            ", ".join(sorted(exposed)),
            LOCAL_DASHBOARD,
        )


_LOOPBACK = {"127.0.0.1", "::1"}


def _listening_hosts(port: int) -> list[str]:
    """The addresses this process listens on at ``port``."""
    return sorted(
        {
            connection.laddr.ip
            for connection in psutil.Process().net_connections(kind="inet")
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        }
    )


# How a worker process of a LocalCluster logs until its first node gives it the
# driver's levels. Kedro's project module, which the process imports as it
# starts, would otherwise read conf/logging.yml: announce that on the run's
# console once per worker, and have every worker write the driver's info.log.
_WORKER_START_LOGGING = f"""\
version: 1
disable_existing_loggers: false
formatters:
  plain:
    format: "{WORKER_FORMAT}"
handlers:
  console:
    class: logging.StreamHandler
    formatter: plain
    stream: ext://sys.stderr
loggers:
  kedro.framework.project:
    level: WARNING
root:
  handlers: [console]
  level: INFO
"""


@contextmanager
def _worker_processes_environment() -> Iterator[bool]:
    """Environment variables for the worker processes of a LocalCluster, set for
    its whole life (a worker that dies is started again): Dask's own messages at
    the driver's level for them (so their start-up banners don't drown the run's
    log), and Kedro's logging as above. Not for other cluster classes, whose
    workers may be on machines without this file.

    The worker processes fork from Dask's forkserver where the platform has one:
    it imports Dask, numpy and pandas once, where each spawned worker imports them
    again. That took 5 s off the example's ``kedro run`` on 2 cores (26.9 and
    37.6 s spawned, 21.7 and 31.8 s forked, interleaved). Yields whether they
    fork.
    """
    forks = _forks_workers()
    level = logging.getLevelName(logging.getLogger("distributed").getEffectiveLevel())
    with (
        _environment(
            {
                _DASK_LOG_LEVEL: level.lower(),
                "KEDRO_LOGGING_CONFIG": str(_worker_logging_file()),
            }
        ),
        dask.config.set({_START_METHOD: "forkserver"} if forks else {}),
    ):
        yield forks


@functools.cache
def _worker_logging_file() -> Path:
    """The file of ``_WORKER_START_LOGGING``, kept for this process's life: the
    forkserver keeps the environment it started with, so workers of a later run
    in this process read this path too."""
    folder = tempfile.mkdtemp(prefix="kedro-dask-")
    atexit.register(_remove_after_the_forkserver, folder)
    path = Path(folder) / "worker-logging.yml"
    path.write_text(_WORKER_START_LOGGING)
    return path


def _remove_after_the_forkserver(folder: str) -> None:
    """Stops the forkserver first: a run that failed before its cluster started
    ends while the forkserver still imports the project, which reads the file."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    if pid := getattr(server, "_forkserver_pid", None):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    shutil.rmtree(folder, ignore_errors=True)


_START_METHOD = "distributed.worker.multiprocessing-method"


def _forks_workers() -> bool:
    """Whether this run's LocalCluster forks its workers: where the platform can,
    unless Dask's configuration chose a start method other than its default."""
    return (
        dask.config.get(_START_METHOD) in ("spawn", "forkserver")
        and "forkserver" in multiprocessing.get_all_start_methods()
    )


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _kwargs_text(config: DaskClientConfig) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in config.cluster_kwargs.items())


class _Client(distributed.Client):
    """A client that closes itself when it cannot connect. distributed's own does
    so only for OSError; after any other error (e.g. a tls:// address without TLS
    settings) the half-made client is closed at interpreter exit, which waits
    2 x timeout and prints a traceback after the run's error."""

    #: What the cluster manager of a cluster this run started hit in starting
    #: workers (see ``workers_failed_to_start``).
    worker_start_errors: Sequence[BaseException] = ()

    def start(self, **kwargs: Any) -> None:
        try:
            super().start(**kwargs)
        except BaseException:  # KeyboardInterrupt too
            with contextlib.suppress(Exception):
                self.close()
            raise

    def close(self, *args: Any, **kwargs: Any) -> Any:
        if self.status != "connecting":
            return super().close(*args, **kwargs)
        # The scheduler went away and the run has said so: Dask would add that
        # it gave up reconnecting.
        with _quiet("distributed.client"):
            return super().close(*args, **kwargs)


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


#: Seconds a worker process of a failed run gets to exit before it is killed.
_FAILED_RUN_GRACE = 0.5


def _stop_workers_at_once_if_the_run_failed(
    cluster: Any, client: distributed.Client
) -> Callable[..., None]:
    """After Ctrl-C or a failure, nodes may still run, and nothing they would
    still do is wanted: worker processes get half a second to exit, instead of
    Dask's 4 s wait for their running tasks, and stay quiet meanwhile (Dask's
    warnings about cancelled tasks and killed workers add nothing to what the run
    has reported). After a successful run no node is left running."""

    def on_exit(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            return
        with contextlib.suppress(Exception):
            client.run(quiet_before_closing, this_process())
        nannies = [
            worker
            for worker in getattr(cluster, "workers", {}).values()
            if isinstance(worker, distributed.Nanny)
        ]
        with _quiet("distributed.nanny"), contextlib.suppress(Exception):
            cluster.sync(_close_nannies, nannies, _FAILED_RUN_GRACE)

    return on_exit


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only critical records of this logger, meanwhile."""
    logger = logging.getLogger(logger_name)
    saved = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(saved)


async def _close_nannies(nannies: list[distributed.Nanny], timeout: float) -> None:
    await asyncio.gather(*(nanny.close(timeout=timeout) for nanny in nannies))


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


def workers_in_this_process(config: DaskClientConfig) -> bool:
    """Whether the run's workers are threads of this process (``inproc://``)."""
    if address := _scheduler_address(config):
        return address.startswith("inproc://")
    if not config.starts_cluster and (active := _active_client()) is not None:
        return str(active.scheduler.address).startswith("inproc://")
    return (
        config.cluster_factory() is distributed.LocalCluster
        and config.cluster_kwargs.get("processes") is False
    )


def workers_share_this_machine(config: DaskClientConfig) -> bool:
    """Whether the run's workers surely run on this machine: those of a
    LocalCluster the runner starts or this process runs, or in this very process."""
    if address := _scheduler_address(config):
        return address.startswith("inproc://")
    if not config.starts_cluster and (active := _active_client()) is not None:
        return isinstance(getattr(active, "cluster", None), distributed.LocalCluster)
    return config.cluster_factory() is distributed.LocalCluster


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


def _install_wheel(client: distributed.Client, config: DaskClientConfig) -> None:
    """Has pip install the project's wheel on the scheduler and every worker."""
    wheel = Path(config.install_wheel or "")
    content = wheel.read_bytes()
    # Named after its content, as an upload is: the same build installs once.
    name = f"{wheel.stem}-{hashlib.sha256(content).hexdigest()[:16]}"
    logger.info("Installing %s on the Dask cluster", wheel.name)
    plugins = [
        plugin(wheel.name, content, config.install_requirements)
        for plugin in (
            wheel_install.InstallWheelOnScheduler,
            wheel_install.InstallWheelOnWorkers,
        )
    ]
    # The cluster does not have the project, hence not this module either.
    cloudpickle.register_pickle_by_value(wheel_install)
    try:
        for plugin in plugins:
            client.register_plugin(plugin, name=name)
    except Exception as exc:
        raise DaskSetupError(
            f"Could not install {wheel.name} on the Dask cluster: "
            f"{type(exc).__name__}: {exc}. The scheduler and workers need pip and "
            f"write access to their Python environment; with "
            f"install_requirements: true, also an index they reach."
        ) from exc
    finally:
        cloudpickle.unregister_pickle_by_value(wheel_install)
