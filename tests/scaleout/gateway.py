"""A real `dask-gateway-server` on 127.0.0.1, started and stopped by the tests.

`dask_gateway.GatewayCluster` is only worth testing against the real server: its
proxy (a Go binary), TLS between client, proxy and scheduler, and the server's
own scaling and shutdown are what a user's ``cluster_kwargs`` meet. The server
runs with ``UnsafeLocalBackend``: schedulers and workers are plain child processes
running as the current user (``LocalBackend`` would switch to the requesting
user's uid, which needs root and a real account per gateway user).

Every process listens on 127.0.0.1 only, and everything started here is stopped
on exit with bounded waits. The server puts its proxy and each scheduler and
worker in a session of its own, so killing the server's process group is not
enough: everything is found again by its working directory, which is always
inside ``folder``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from dask_gateway import BasicAuth, Gateway
from dask_gateway.client import ClusterReport

from ..shared import alive, free_ports, stop_groups, wait_until_answers

# A gateway user; with ``SimpleAuthenticator`` any name is accepted, and every
# name is a separate user who only sees (and may stop) their own clusters.
USERNAME = "kedro"

SERVER_CONFIG = """\
# Written by tests/scaleout/gateway.py: a throwaway gateway on 127.0.0.1.
c.DaskGateway.address = "127.0.0.1:{api_port}"
c.DaskGateway.log_level = "INFO"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}

c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
# Each cluster's working directory (logs, TLS files) lives in the test's folder.
c.UnsafeLocalBackend.clusters_directory = {clusters!r}
c.UnsafeLocalBackend.sigint_timeout = 5
c.UnsafeLocalBackend.sigterm_timeout = 5
c.UnsafeLocalBackend.sigkill_timeout = 5
c.UnsafeLocalBackend.cluster_status_period = 5
c.UnsafeLocalBackend.worker_status_period = 5
c.UnsafeLocalBackend.cluster_heartbeat_period = 5
c.UnsafeLocalBackend.cluster_start_timeout = 60
c.UnsafeLocalBackend.worker_start_timeout = 60
# The processes only see these variables of the server's environment, plus
# ClusterConfig.environment.
c.UnsafeLocalBackend.inherited_environment = {inherited!r}

# HTTP(S) API for clients, and the TLS (SNI) proxy to the schedulers.
c.Proxy.address = "127.0.0.1:{proxy_port}"
c.Proxy.tcp_address = "127.0.0.1:{tcp_port}"

# The backend passes --host/--dashboard-address 127.0.0.1 to the scheduler and
# --dashboard-address to the worker; the worker's own --host is added here.
c.ClusterConfig.scheduler_cmd = {scheduler_cmd!r}
c.ClusterConfig.worker_cmd = {worker_cmd!r}
c.ClusterConfig.environment = {environment!r}
c.ClusterConfig.scheduler_cores = 1
c.ClusterConfig.scheduler_memory = "1 G"
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1 G"
# Scheduler and workers together: a test cannot ask for more than max_workers.
c.ClusterConfig.cluster_max_cores = {max_cores}
c.ClusterConfig.cluster_max_workers = {max_workers}
c.ClusterConfig.adaptive_period = 1
# A cluster a test forgets is stopped by the server after this many idle seconds.
c.ClusterConfig.idle_timeout = {idle_timeout}
"""

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>

INHERITED_ENVIRONMENT = ["PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "HOME"]


@dataclass
class GatewayServer:
    """A running gateway: what a client needs to reach it, and its processes.

    ``address`` (``http://127.0.0.1:PORT``, the proxy's HTTP side) and
    ``proxy_address`` (``gateway://127.0.0.1:PORT``, the proxy's TLS side that
    reaches the schedulers) are plain strings, as ``cluster_kwargs`` in YAML give
    them; only the credentials need an ``auth`` object (or ``auth: basic`` plus
    the ``gateway.auth.kwargs`` Dask config). ``api_address`` is the server's
    private API, which clients never need.
    """

    address: str
    proxy_address: str
    api_address: str
    password: str
    folder: Path
    log: Path
    process: subprocess.Popen
    username: str = USERNAME
    users: set[str] = field(default_factory=set)

    def auth(
        self, username: str | None = None, password: str | None = None
    ) -> BasicAuth:
        """Basic auth for ``username`` (default ``self.username``)."""
        name = username or self.username
        self.users.add(name)
        return BasicAuth(name, self.password if password is None else password)

    def cluster_kwargs(self, username: str | None = None) -> dict:
        """The keywords for ``dask_gateway.GatewayCluster`` and ``Gateway``."""
        return {
            "address": self.address,
            "proxy_address": self.proxy_address,
            "auth": self.auth(username),
        }

    def list_clusters(self, username: str | None = None) -> list[ClusterReport]:
        """The pending and running clusters of ``username``."""
        return asyncio.run(self._list_clusters(username))

    def running_cluster(self, workers: int, timeout: float = 60) -> str:
        """Starts a cluster of ``workers`` workers, as a user would before a run,
        and leaves it running; returns its name."""
        return asyncio.run(asyncio.wait_for(self._running_cluster(workers), timeout))

    def stop_clusters(self, timeout: float = 60) -> None:
        """Asks the server to stop every cluster of every user seen, and waits
        (bounded) until it lists none."""
        asyncio.run(asyncio.wait_for(self._stop_clusters(), timeout))

    # The helpers use Gateway in asynchronous mode: a synchronous Gateway, once
    # closed, raises "Accessing the loop property while the loop is not running"
    # from its __del__ (dask-gateway 2026.3 with distributed 2026.8).

    def _gateway(self, username: str | None) -> Gateway:
        return Gateway(**self.cluster_kwargs(username), asynchronous=True)

    async def _list_clusters(self, username: str | None) -> list[ClusterReport]:
        async with self._gateway(username) as client:
            return await client.list_clusters()

    async def _running_cluster(self, workers: int) -> str:
        async with self._gateway(None) as client:
            cluster = await client.new_cluster(shutdown_on_close=False)
            await cluster.scale(workers)
            await cluster.close()  # this client's connection, not the cluster
            return cluster.name

    async def _stop_clusters(self) -> None:
        for name in self.users | {self.username}:
            async with self._gateway(name) as client:
                for report in await client.list_clusters():
                    await client.stop_cluster(report.name)
                while await client.list_clusters():
                    await asyncio.sleep(0.5)

    def processes(self) -> list[psutil.Process]:
        """The server and its proxy, schedulers, nannies and workers."""
        return _processes_in(self.folder, self.process.pid)

    def cluster_processes(self) -> list[psutil.Process]:
        """The scheduler, nanny and worker processes of every cluster."""
        clusters = self.folder / "clusters"
        return [p for p in self.processes() if _cwd(p).is_relative_to(clusters)]

    def worker_count(self) -> int:
        """How many Dask workers (``dask worker`` processes) its clusters have."""
        count = 0
        for process in self.cluster_processes():
            with contextlib.suppress(psutil.Error):
                count += process.cmdline()[1:4] == ["-m", "dask", "worker"]
        return count


def _cwd(process: psutil.Process) -> Path:
    with contextlib.suppress(psutil.Error):
        return Path(process.cwd())
    return Path("/nonexistent")


def _processes_in(folder: Path, pid: int) -> list[psutil.Process]:
    """``pid``'s descendants, and the processes working in ``folder`` (the
    server and proxy) or in a cluster's directory below ``folder/clusters``:
    the schedulers and workers still there after the server was killed."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        server = psutil.Process(pid)
        found[pid] = server
        found.update((p.pid, p) for p in server.children(recursive=True))
    for process in psutil.process_iter():
        cwd = _cwd(process)
        ours = cwd == folder or cwd.is_relative_to(folder / "clusters")
        if ours and process.pid != os.getpid():
            found[process.pid] = process
    return alive(found.values())


def _kill(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL after ``timeout``; returns those still alive."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
        _, processes = psutil.wait_procs(processes, timeout=wait)
        if not processes:
            break
    return processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Asks Linux to SIGTERM the server when the test process dies, even by
    SIGKILL or a timeout: the server then stops its clusters itself."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def gateway_server(
    folder: Path,
    password: str,
    python: str = sys.executable,
    max_workers: int = 2,
    environment: dict[str, str] | None = None,
    idle_timeout: float = 600,
    start_timeout: float = 60,
    stop_timeout: float = 30,
) -> Iterator[GatewayServer]:
    """Starts ``dask-gateway-server -f folder/dask_gateway_config.py``, waits until
    its API answers through the proxy, and on exit stops its clusters, then the
    server, then whatever is left (bounded waits); raises if anything survives.

    Schedulers and workers run ``python -m dask ...`` with ``python`` (this
    interpreter by default: the venv's ``dask-scheduler`` script no longer
    exists), ``environment`` added to the few variables they inherit; the server
    is ``dask-gateway-server`` next to ``python``. A cluster may have at most
    ``max_workers`` workers (1 core, 1 GiB each) and stops after ``idle_timeout``
    idle seconds. The server is also sent SIGTERM by Linux if the thread that
    called this dies (call it from the main thread), so even a killed test run
    leaves nothing behind.
    """
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clusters").mkdir(exist_ok=True)
    api_port, proxy_port, tcp_port = free_ports(3)
    config = folder / "dask_gateway_config.py"
    config.write_text(
        SERVER_CONFIG.format(
            api_port=api_port,
            proxy_port=proxy_port,
            tcp_port=tcp_port,
            password=password,
            clusters=str(folder / "clusters"),
            inherited=INHERITED_ENVIRONMENT,
            scheduler_cmd=[python, "-m", "dask", "scheduler"],
            worker_cmd=[python, "-m", "dask", "worker", "--host", "127.0.0.1"],
            environment=environment or {},
            max_cores=max_workers + 1,
            max_workers=max_workers,
            idle_timeout=idle_timeout,
        )
    )
    log = folder / "gateway.log"
    executable = Path(python).parent / "dask-gateway-server"
    command = [str(executable), "-f", str(config)]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=folder,  # the proxy inherits it, so it is found by its directory
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    server = GatewayServer(
        address=f"http://127.0.0.1:{proxy_port}",
        proxy_address=f"gateway://127.0.0.1:{tcp_port}",
        api_address=f"http://127.0.0.1:{api_port}",
        password=password,
        folder=folder,
        log=log,
        process=process,
    )
    try:
        url = f"{server.address}/api/health"
        wait_until_answers(url, process, log, start_timeout, "dask-gateway-server")
        yield server
    finally:
        _stop(server, stop_timeout)


def _stop(server: GatewayServer, timeout: float) -> None:
    """Clusters first (the server's own way), then the server with SIGTERM (it
    stops any cluster it still has), then SIGKILL for anything left over."""
    with contextlib.suppress(Exception):
        if server.process.poll() is None:
            server.stop_clusters(timeout)
    left = server.processes()  # before the server goes, while it is their parent
    stop_groups([server.process], timeout)
    remaining = {p.pid: p for p in alive([*left, *server.processes()])}
    survivors = _kill(list(remaining.values()), timeout=10)
    if survivors:
        raise RuntimeError(f"processes left by the gateway: {survivors}")
