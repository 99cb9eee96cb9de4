"""Opening and closing a run's Dask cluster: the runner closes what it opened (a
cluster it started, a client it connected), never a scheduler or client it found."""

from __future__ import annotations

import asyncio
import functools
import importlib
import ipaddress
import logging
import pydoc
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from typing import Any
from urllib.parse import urlsplit

import dask.config
import distributed

from . import local_cluster
from .client_config import DaskClientConfig, keywords_of, unknown_keys
from .errors import DaskSetupError, one_line
from .interrupts import CtrlCHeldBack, ctrl_c_kept, raise_a_press_python_swallowed
from .log_forwarding import quiet

logger = logging.getLogger(__name__)


@contextmanager
def dask_client(
    config: DaskClientConfig, held: CtrlCHeldBack | None = None
) -> Iterator[distributed.Client]:
    """Yields a client for the configured cluster, closing what it opened; Ctrl-C
    waits while a cluster starts or all closes (from ``held.on_the_way_out``)."""
    raise_a_press_python_swallowed()
    held = held or CtrlCHeldBack()
    with ExitStack() as opened:
        opened.push(held.__exit__)  # the last step out: a held press is raised
        address, active = _existing(config)
        cluster = None  # unless the run starts one
        if address:
            logger.info("Connecting to the Dask scheduler at %s", address)
            client = opened.enter_context(_connect(address, config))
        elif active is not None:
            client = active
            logger.info("Using this process's Dask client %s", client)
        else:
            if ignored := dask.config.get("scheduler-address", None):
                logger.warning(
                    "dask_client starts a cluster, so the scheduler at %s (Dask's "
                    "scheduler-address, e.g. $DASK_SCHEDULER_ADDRESS) is not used.",
                    ignored,
                )
            with held:
                factory = cluster_factory(config.cluster_class)
                if factory is distributed.LocalCluster:
                    opened.enter_context(local_cluster.worker_processes_environment())
                errors = opened.enter_context(_worker_start_errors(factory))
                cluster = _start_cluster(factory, config)
                opened.callback(_close, cluster)
                client = opened.enter_context(_connect(cluster, config))
                client.worker_start_errors = errors
            opened.push(local_cluster.close_workers_quietly(cluster, client))
        _log_dashboard(client, cluster)
        if not isinstance(cluster, distributed.LocalCluster):  # else this Python
            check_same_python(client)
        opened.callback(held.__enter__)  # the first step out
        yield client


def prepare_local_cluster(config: DaskClientConfig) -> None:
    """Starts now the fork server of the LocalCluster's workers a run will start."""
    local_cluster.check_not_a_worker_starting()
    starts_cluster = _existing(config) == (None, None)
    if starts_cluster and where_workers_run(config) == "this machine":
        with CtrlCHeldBack():
            local_cluster.start_worker_forkserver()


def where_workers_run(config: DaskClientConfig) -> str:
    """Where the run's workers surely are: ``"this process"``, ``"this machine"``
    (a LocalCluster the runner starts or this process runs), or ``"anywhere"``."""
    address, active = _existing(config)
    if active is not None:
        address = str(active.scheduler.address)
    if address:
        if address.startswith("inproc://"):
            return "this process"
        local = isinstance(getattr(active, "cluster", None), distributed.LocalCluster)
        return "this machine" if local else "anywhere"
    if cluster_factory(config.cluster_class) is not distributed.LocalCluster:
        return "anywhere"
    in_threads = config.cluster_kwargs.get("processes") is False
    return "this process" if in_threads else "this machine"


def check_same_python(client: distributed.Client) -> None:
    """Refuses a scheduler or workers on another Python version (Dask only warns):
    the run's plugins travel as bytecode, which crashes another version's process."""
    versions = client.get_versions()
    workers = sorted(versions["workers"].items())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    others = [
        f"{name} (Python {python.partition('.final')[0]})"
        for name, info in [("the scheduler", versions["scheduler"]), *workers]
        if not (python := info["host"]["python"]).startswith(f"{here}.")
    ]
    if others:
        raise DaskSetupError(
            f"The Dask cluster runs another Python than this machine's {here}: "
            f"{', '.join(others[:3])}{' and more' if others[3:] else ''}. The runner's "
            "plugins travel as bytecode, which another Python cannot load: run the "
            f"cluster on Python {here}, or Kedro on the cluster's Python."
        )


def credentials_in_the_clear(
    datasets: Mapping[str, Any], client: distributed.Client
) -> str | None:
    """A warning if node tasks, which carry datasets' credentials, go unencrypted."""
    names = [
        name
        for name, dataset in sorted(datasets.items())
        if (getattr(dataset, "_init_args", None) or {}).get("credentials")
    ]
    workers = client.scheduler_info(n_workers=-1)["workers"] if names else {}
    exposed = [a for a in [client.scheduler.address, *workers] if in_the_clear(a)]
    if not names or not exposed:
        return None
    return (
        f"The datasets {', '.join(names)} hold credentials, which travel to the "
        f"Dask workers unencrypted via {exposed[0]}"
        f"{' and more' if exposed[1:] else ''}. Use a tls:// scheduler with "
        "dask_client.security, or keep the cluster on this machine."
    )


def in_the_clear(address: str) -> bool:
    """Whether Dask traffic to ``address`` leaves this machine unencrypted."""
    if address.partition("://")[0] not in ("tcp", "ws"):  # tls://, inproc://, ...
        return False
    return not _loopback(distributed.comm.get_address_host(address))


@functools.cache
def cluster_factory(path: str | None) -> Callable[..., Any]:
    """What ``dask_client.cluster_class`` names (by default LocalCluster)."""
    if not path:
        return distributed.LocalCluster
    if "." not in path:
        raise DaskSetupError(
            "dask_client.cluster_class must be a dotted path such as "
            f"dask_jobqueue.SLURMCluster, got {path!r}."
        )
    top = path.partition(".")[0]
    try:
        with ctrl_c_kept():  # importing dask_jobqueue replaces the SIGINT handler
            importlib.import_module(top)  # else locate() says None: no error to show
            found = pydoc.locate(path)
    except (ImportError, pydoc.ErrorDuringImport) as exc:
        raise DaskSetupError(
            f"dask_client.cluster_class {path!r} cannot be imported ({exc}). Run "
            f"`pip install {top.replace('_', '-')}` and add it to requirements.txt."
        ) from exc
    if not callable(found):
        owner, _, name = path.rpartition(".")
        what = f"is a {type(found).__name__}"
        if found is None:
            what = f"is not found ({owner.split('.')[-1]!r} has no {name!r})"
        raise DaskSetupError(_not_a_cluster(path, what))
    return found  # type: ignore[no-any-return]


def _not_a_cluster(path: str, what: str) -> str:
    return (
        f"dask_client.cluster_class {path!r} {what}, not a Dask cluster. Name a "
        "cluster class such as dask_jobqueue.SLURMCluster."
    )


@contextmanager
def _worker_start_errors(factory: Callable[..., Any]) -> Iterator[list[BaseException]]:
    """Logs in one line, and keeps for the run's error, what a cluster manager's
    callbacks raise: a SpecCluster's refused ``sbatch`` reaches only Tornado's log."""
    package = factory.__module__.split(".")[0]
    errors: list[BaseException] = []

    def collect(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        frames = traceback.walk_tb(getattr(error, "__traceback__", None))
        names = {str(frame.f_globals.get("__name__")) for frame, _ in frames}
        if error is None or package not in {name.split(".")[0] for name in names}:
            return True
        errors.append(error)
        logger.warning("%s failed: %s", factory.__name__, one_line(error))
        return False

    tornado_log = logging.getLogger("tornado.application")
    if package != distributed.__name__:
        tornado_log.addFilter(collect)
    try:
        yield errors
    finally:
        tornado_log.removeFilter(collect)


def _existing(config: DaskClientConfig) -> tuple[str | None, Any]:
    """The scheduler address to connect to, or else this process's default client."""
    if config.starts_cluster:
        return None, None
    # Dask's own setting, e.g. the DASK_SCHEDULER_ADDRESS environment variable.
    if address := config.address or dask.config.get("scheduler-address", None):
        return address, None
    try:
        return None, distributed.default_client()
    except ValueError:
        return None, None


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name, or every interface (""): it may be anywhere
        return False


def _close(cluster: Any) -> None:
    """Logs, not raises over the run's outcome, an error in closing (dask-jobqueue
    asserts on a job sbatch refused, after cancelling those it submitted)."""
    try:
        if callable(close := getattr(cluster, "close", None)):
            close()
    except Exception as exc:
        name = type(cluster).__name__
        logger.warning("%s did not close cleanly (%s)", name, one_line(exc))


def _start_cluster(factory: Callable[..., Any], config: DaskClientConfig) -> Any:
    name, kwargs = f"{factory.__module__}.{factory.__qualname__}", config.cluster_kwargs
    if config.security is not None:  # a started cluster's client takes its own
        raise DaskSetupError(
            f"dask_client.security is for a scheduler at `address`, but this run "
            f"starts a {factory.__name__}, whose client takes the cluster's own. Set "
            "it only with `address`, or ask for TLS in dask_client.cluster_kwargs."
        )
    if factory is distributed.LocalCluster:
        kwargs = local_cluster.local_cluster_kwargs(kwargs)
    text = ", ".join(f"{key}={value!r}" for key, value in config.cluster_kwargs.items())
    logger.info("Starting a Dask cluster: %s(%s)", name, text)
    try:
        with warnings.catch_warnings():
            # Another run's dashboard has the port: Dask takes a free one, logged.
            warnings.filterwarnings("ignore", "Port .* is already in use", UserWarning)
            cluster = factory(**kwargs)
    except Exception as exc:
        raise DaskSetupError(
            f"Could not start {name} with {text or 'no arguments'}: "
            f"{one_line(exc).rstrip('.')}. {_what_to_check(exc, factory)}"
        ) from exc
    try:
        _check_and_scale(cluster, name, config)
    except DaskSetupError:
        _close(cluster)
        raise
    return cluster


def _check_and_scale(cluster: Any, name: str, config: DaskClientConfig) -> None:
    """Refuses a started cluster no node could run on, and makes it adaptive."""
    if not hasattr(cluster, "scheduler_address"):  # what a Client connects to
        what = f"returned a {type(cluster).__name__}"
        raise DaskSetupError(_not_a_cluster(str(config.cluster_class), what))
    if isinstance(cluster, distributed.LocalCluster):
        local_cluster.check_worker_memory(cluster)
    if config.adapt is None:
        if getattr(cluster, "worker_spec", None) == {}:  # a SpecCluster, unscaled
            raise DaskSetupError(
                f"{name} started with no workers and dask_client has no `adapt`, so "
                "no node could run. Set dask_client.cluster_kwargs.n_workers or `adapt`."
            )
        return
    if isinstance(cluster, distributed.deploy.Cluster):
        # Its Adaptive hands keys it does not know to the scheduler, which refuses
        # them in the adaptive loop, as tracebacks, after the run starts.
        known = keywords_of(cluster.adapt) | keywords_of(distributed.Adaptive)
        known |= keywords_of(distributed.Scheduler.workers_to_close)
        if unknown := config.adapt.keys() - known:
            raise DaskSetupError(unknown_keys("dask_client.adapt", unknown, known))
    try:
        cluster.adapt(**config.adapt)
    except Exception as exc:
        raise DaskSetupError(
            f"Could not make {name} adaptive with {config.adapt}: {exc}. "
            "dask_client.adapt takes Cluster.adapt's keywords, e.g. maximum."
        ) from exc


def _what_to_check(error: Exception, factory: Callable[..., Any]) -> str:
    if getattr(error, "status", None) in (401, 403):  # an HTTP API (dask-gateway)
        return (
            "The cluster manager refused the credentials: check its user name and "
            "password or token (dask-gateway: DASK_GATEWAY__AUTH__*)."
        )
    if script := local_cluster.unguarded_script():
        return (
            f"Worker processes import {script} as they start: put the code that runs "
            'the session under `if __name__ == "__main__":`.'
        )
    if factory is distributed.LocalCluster:  # its keywords may be top-level ones
        return "Check the LocalCluster keywords in dask_client (n_workers, ...)."
    return "Check dask_client.cluster_kwargs."


def _log_dashboard(client: distributed.Client, cluster: Any) -> None:
    """Logs the dashboard's link; warns if the scheduler of a cluster the runner
    started here (a SpecCluster's: LocalCluster, dask-jobqueue) serves it to all."""
    spec = getattr(cluster, "scheduler_spec", None) or {}
    in_process = spec.get("cls") is distributed.Scheduler  # else it runs elsewhere
    options = spec.get("options", {}) if in_process else {}
    if options.get("dashboard") is False:  # LocalCluster(dashboard_address=None)
        logger.info("Dask dashboard: none (dask_client.dashboard_address is null)")
        return
    link, address = client.dashboard_link, options.get("dashboard_address")
    host = str(address).rpartition(":")[0]
    if link and _loopback(host):  # in threads, Dask's link names this machine's IP
        link = urlsplit(link)._replace(netloc=f"{host}:{urlsplit(link).port}").geturl()
    logger.info("Dask dashboard: %s", link or "none")
    if address is not None and not _loopback(host):
        logger.warning(
            "The Dask dashboard listens on %s, so anyone who can reach this machine "
            "can see the run's tasks and logs. Set its address to %s: "
            "dask_client.dashboard_address, or for dask-jobqueue "
            "cluster_kwargs.scheduler_options.dashboard_address.",
            address,
            local_cluster.LOCAL_DASHBOARD,
        )


class _Client(distributed.Client):
    """Closes itself on any failure to connect (distributed's only on OSError): a
    half-made client closes at exit, waiting 2 x timeout, printing a traceback."""

    worker_start_errors: list[BaseException] | None = None  # None: started no cluster

    def start(self, **kwargs: Any) -> None:
        try:
            super().start(**kwargs)
        except BaseException:  # KeyboardInterrupt too
            with suppress(Exception):
                self.close()
            raise

    async def _start(self, **kwargs: Any) -> Any:
        # distributed bounds the TCP connection, not the handshake after it: an
        # address that accepts but is no scheduler (its dashboard's) would hang.
        return await asyncio.wait_for(super()._start(**kwargs), self._timeout)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        # The run has said the scheduler went: Dask would add it gave up reconnecting.
        connecting = self.status == "connecting"
        with quiet("distributed.client") if connecting else nullcontext():
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
            f"{config.timeout:g} s ({type(exc).__name__}: {exc}). Check that it runs "
            "and is reachable, and that dask_client.security matches a TLS scheduler."
        ) from exc
