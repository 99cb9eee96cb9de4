"""Simulated hosts for tests: Linux network and mount namespaces on one machine.

A `SimulatedNetwork` is a "switch" network namespace holding a bridge, and one
network namespace per `Host`, joined to the bridge by a veth pair and given an
address in 198.18.0.0/24 (RFC 2544's benchmarking range: never routed, so no
real machine is ever addressed). Nothing is configured in the root namespace, so
the pytest process cannot reach the hosts: whatever talks to a scheduler runs on
a host (`Host.run`, `Host.python`).

Each process started on a host also gets a private mount namespace with the
host's bind mounts applied first, so a directory there can be another one than
on the other hosts (same path, another disk, as on a real second machine), while
a `SharedDirectory` is one backing directory at the same path on every host that
mounts it (as NFS would be). It gets its own UTS namespace too, with the host's
name as hostname, and an /etc/hosts that names every host.

Everything is removed on exit, even when the test body raised: process groups
get SIGTERM, then SIGKILL after `grace` seconds; whatever still runs in a
namespace is killed; the namespaces (with their veths and bridge) are deleted.
Names carry the pid of the pytest process and a random token, so concurrent runs
never collide, and the namespaces of runs whose process is dead are swept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import pytest

from ..conftest import ENV, dask_tls_args, make_tls_files, run_bounded
from ..shared import group_alive, kill_group, stop_groups, tail, wait_for

#: Every namespace this library makes is named PREFIX-<pid>-<token>-<host>.
PREFIX = "kdhost"
#: RFC 2544's benchmarking range: hosts get .1, .2, ... in the order added.
SUBNET = "198.18.0"
#: Set to 1 (the `hosts` nox session does, as root) to fail instead of skipping,
#: so that a session made for these tests cannot pass by skipping them all.
REQUIRED = "SIMULATED_HOSTS_REQUIRED"
#: The `dask` command of the interpreter running the tests.
DASK = Path(sys.executable).parent / "dask"
TOOLS = ("ip", "unshare", "mount", "hostname", "sh")

PathLike = str | os.PathLike[str]
#: Bind mounts as {target: source}: the path processes on the host see, and the
#: directory (or file) that is really there.
Mounts = Mapping[PathLike, PathLike]

_HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_OURS = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]+-")
_IP_TIMEOUT = 30


class NamespaceError(RuntimeError):
    """An `ip` command that set up or removed a namespace failed."""


class HostCommandError(AssertionError):
    """A command run on a host failed; the message holds its output."""


def unavailable() -> str | None:
    """Why simulated hosts cannot run here (not root, a tool missing), or None."""
    if os.geteuid() != 0:
        return (
            "simulated hosts need root (network and mount namespaces); "
            f"running as uid {os.geteuid()}"
        )
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"simulated hosts need {', '.join(missing)} on PATH "
            "(Debian: iproute2, util-linux, hostname)"
        )
    return None


def skip(reason: str) -> NoReturn:
    """pytest.skip, or pytest.fail when $SIMULATED_HOSTS_REQUIRED is 1."""
    if os.environ.get(REQUIRED) == "1":
        pytest.fail(f"{reason} (and ${REQUIRED}=1)", pytrace=False)
    pytest.skip(reason)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT
    )
    if check and result.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def namespaces() -> list[str]:
    """The names of all network namespaces (`ip netns list`)."""
    lines = _ip("netns", "list").stdout.splitlines()
    return [line.split()[0] for line in lines if line.strip()]


def namespace_pids(namespace: str) -> list[int]:
    """The processes in a network namespace, whatever their group or session."""
    result = _ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in result.stdout.split()]


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_inside(namespace: str, timeout: float = 5.0) -> list[int]:
    """SIGKILLs every process left in a namespace (one that left its process
    group, say) and waits for them to go; returns those still there."""
    pids = namespace_pids(namespace)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not any(map(pid_alive, pids)), timeout, f"{namespace} empty")
    return [pid for pid in pids if pid_alive(pid)]


def sweep_dead_runs() -> list[str]:
    """Deletes the namespaces of earlier runs whose pytest process is gone (a
    run killed before its cleanup could run), killing what still runs there;
    namespaces of live processes, e.g. a concurrent run, are left alone."""
    swept = []
    for name in namespaces():
        match = _OURS.match(name)
        if match and not pid_alive(int(match.group(1))):
            _kill_inside(name)
            _ip("netns", "del", name, check=False)
            swept.append(name)
    return swept


@dataclass
class HostProcess:
    """A long-running process on a host, leader of its own process group."""

    host: str
    label: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """Whether anything of its process group still runs."""
        return group_alive(self.popen)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to its process group, SIGKILL after `grace` seconds."""
        stop_processes([self], grace)

    def kill(self) -> None:
        """SIGKILL to its process group: a machine that dies, with no goodbye."""
        kill_group(self.popen, timeout=10)

    def wait(self, timeout: float) -> int:
        """Its exit code; fails with its log's tail if it runs past `timeout`."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HostCommandError(
                f"{self.label} on {self.host} still runs after {timeout} s:\n"
                + tail(self.log, 4000)
            ) from None

    def describe(self, size: int = 4000) -> str:
        code = self.popen.poll()
        state = "running" if code is None else f"exited with {code}"
        return (
            f"--- {self.host}: {self.label} ({state}), {self.log}\n"
            f"{tail(self.log, size)}"
        )


def stop_processes(processes: Iterable[HostProcess], grace: float = 5.0) -> None:
    """``stop_groups`` for processes on hosts: Dask shuts down cleanly on
    SIGTERM, and a hung one cannot hold up the test."""
    stop_groups([process.popen for process in processes], grace)


def _paths(mounts: Mounts | None) -> dict[Path, Path]:
    paths = {Path(target): Path(source) for target, source in (mounts or {}).items()}
    relative = [
        str(path) for pair in paths.items() for path in pair if not path.is_absolute()
    ]
    if relative:
        raise ValueError(f"bind mounts need absolute paths: {relative}")
    return paths


@dataclass(frozen=True)
class SharedDirectory:
    """One backing directory mounted at `path` on each host that lists it, as
    NFS would be: what a worker host writes there the driver host reads; the
    pytest process, in the root namespace, sees it in `backing`."""

    path: Path
    backing: Path

    @property
    def mounts(self) -> dict[Path, Path]:
        return {self.path: self.backing}


@dataclass
class Host:
    """One simulated machine: its own network namespace and address, and its own
    view of the files through `mounts`, applied to every process started on it."""

    network: SimulatedNetwork
    name: str
    address: str
    namespace: str
    mounts: dict[Path, Path]

    def command(
        self,
        argv: Sequence[PathLike],
        *,
        cwd: PathLike | None = None,
        mounts: Mounts | None = None,
    ) -> list[str]:
        """`argv` wrapped to run on this host: `ip netns exec`, a new mount and
        UTS namespace, the hostname, the bind mounts (parents first, so a shared
        directory inside a replaced one lands in the replacement), then `cd`
        (after the mounts, so a replaced directory is the one entered)."""
        every = {**self.mounts, **_paths(mounts)}
        every[Path("/etc/hosts")] = self.network.hosts_file
        ordered = sorted(every.items(), key=lambda pair: len(pair[0].parts))
        steps = [f"hostname {shlex.quote(self.name)}"]
        steps += [
            f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}"
            for target, source in ordered
        ]
        if cwd is not None:
            steps.append(f"cd {shlex.quote(str(cwd))}")
        steps.append('exec "$@"')
        return [
            "ip",
            "netns",
            "exec",
            self.namespace,
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            " && ".join(steps),
            "sh",
            *map(str, argv),
        ]

    def start(
        self,
        argv: Sequence[PathLike],
        *,
        label: str | None = None,
        cwd: PathLike | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Mounts | None = None,
    ) -> HostProcess:
        """Starts a long-running process on this host, in its own session so that
        its whole process group can be stopped, its output in a log file; it is
        stopped when the network closes, if not before (`stop_processes`)."""
        network = self.network
        label = label or Path(str(argv[0])).name
        network._count += 1
        log = network.logs / f"{network._count:02d}-{self.name}-{label}.log"
        command = self.command(argv, cwd=cwd, mounts=mounts)
        with log.open("wb") as output:
            popen = subprocess.Popen(
                command,
                cwd=network.workdir,
                env=dict(ENV if env is None else env),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = HostProcess(self.name, label, command, log, popen)
        network.processes.append(process)
        return process

    def run(
        self,
        argv: Sequence[PathLike],
        *,
        cwd: PathLike | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Mounts | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Runs a command on this host to its end; on timeout its process group
        is killed and the test fails with its output."""
        return run_bounded(
            self.command(argv, cwd=cwd, mounts=mounts),
            self.network.workdir,
            timeout,
            dict(ENV if env is None else env),
            stderr=subprocess.PIPE,
            what=f"{list(map(str, argv))} on {self.name}",
        )

    def python(
        self,
        code: str,
        *args: PathLike,
        cwd: PathLike | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Mounts | None = None,
        timeout: float = 120,
    ) -> str:
        """Runs a Python snippet (`sys.argv[1:]` = `args`) on this host with the
        test's interpreter and returns its stdout: the way to talk to a
        scheduler, which the pytest process cannot reach."""
        result = self.run(
            [sys.executable, "-c", code, *args],
            cwd=cwd,
            env=env,
            mounts=mounts,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise HostCommandError(
                f"Python on {self.name} exited with {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
            )
        return result.stdout

    def pids(self) -> list[int]:
        """Every process now running on this host."""
        return namespace_pids(self.namespace)


def dask_tls_env(tls: Mapping[str, str]) -> dict[str, str]:
    """Dask's TLS settings as environment variables, which `Security()` reads by
    default: a snippet's `Client(address)` or a `kedro run` started with them
    uses TLS with no code of its own."""
    return {
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": tls["ca"],
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": tls["cert"],
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": tls["key"],
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
    }


def _dask_command(python: PathLike | None) -> list[PathLike]:
    """The `dask` command of the tests' interpreter, or `python -m dask` with
    another one (that of another virtual environment)."""
    return [DASK] if python is None else [python, "-m", "dask"]


@dataclass
class DaskScheduler:
    """A `dask scheduler` process on a host."""

    host: Host
    process: HostProcess
    address: str
    tls: dict[str, str] | None = None

    def client_env(self) -> dict[str, str]:
        """What a client of this scheduler needs in its environment (TLS)."""
        return dask_tls_env(self.tls) if self.tls else {}


@dataclass
class DaskWorker:
    """A `dask worker` process (with its nanny, by default) on a host."""

    host: Host
    name: str
    process: HostProcess
    local_directory: Path


_WAIT_FOR_WORKERS = """
import json, sys
from distributed import Client
address, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with Client(address, timeout=timeout, set_as_default=False) as client:
    client.wait_for_workers(n, timeout=timeout)
    workers = client.scheduler_info(n_workers=-1)["workers"]
print(json.dumps({address: info["name"] for address, info in workers.items()}))
"""


class SimulatedNetwork:
    """Hosts on one simulated LAN, as a context manager that removes everything
    it made on exit (and raises if it could not, unless the body raised)."""

    def __init__(self, workdir: Path, *, grace: float = 5.0) -> None:
        self.workdir = Path(workdir)
        self.grace = grace
        self.token = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.switch = f"{self.token}-switch"
        self.hosts: dict[str, Host] = {}
        self.processes: list[HostProcess] = []
        #: Every namespace created (or being created), the switch first.
        self.namespaces: list[str] = []
        self.logs = self.workdir / "logs"
        self.hosts_file = self.workdir / "etc-hosts"
        self._count = 0
        self._shares = 0
        self._aliases: dict[str, tuple[str, ...]] = {}

    # --- lifetime ---------------------------------------------------------------

    def __enter__(self) -> SimulatedNetwork:
        reason = unavailable()
        if reason:
            skip(reason)
        self.logs.mkdir(parents=True, exist_ok=True)
        sweep_dead_runs()
        try:
            self.namespaces.append(self.switch)
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except NamespaceError as error:
            self.close()
            skip(f"cannot create a network namespace: {error}")
        self._write_hosts_file()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        problems = self.close()
        if problems and exc_type is None:
            raise NamespaceError("; ".join(problems))

    def close(self) -> list[str]:
        """Stops every process, kills what is left in the namespaces, deletes
        them; returns what could not be removed. Safe to call twice."""
        problems: list[str] = []
        stop_processes(self.processes, self.grace)
        for namespace in reversed(self.namespaces):
            if left := _kill_inside(namespace):
                problems.append(f"processes {left} survive in {namespace}")
        for namespace in reversed(self.namespaces):
            result = _ip("netns", "del", namespace, check=False)
            if result.returncode != 0 and namespace in namespaces():
                problems.append(f"ip netns del {namespace}: {result.stderr.strip()}")
        left = sorted(set(namespaces()) & set(self.namespaces))
        if left:
            problems.append(f"namespaces left: {left}")
        return problems

    # --- hosts ------------------------------------------------------------------

    def share(self, path: PathLike | None = None) -> SharedDirectory:
        """A new shared directory mounted at `path` (by default a fresh directory
        in the work folder), backed by a fresh directory: pass it to `add_host`.
        The mount point is created if missing; in the root namespace it stays an
        empty directory."""
        self._shares += 1
        target = Path(path or self.workdir / f"shared-{self._shares}")
        backing = self.workdir / f"shared-{self._shares}-backing"
        target.mkdir(parents=True, exist_ok=True)
        backing.mkdir(parents=True)
        return SharedDirectory(target.resolve(), backing.resolve())

    def add_host(
        self,
        name: str,
        *,
        mounts: Mounts | None = None,
        shared: Sequence[SharedDirectory] = (),
        aliases: Sequence[str] = (),
    ) -> Host:
        """A new host (network namespace with the next 198.18.0.x, joined to the
        bridge), with its bind mounts ({target: source}) and shared directories;
        it may be added while the others run (a machine that joins late)."""
        if not _HOST_NAME.match(name) or name in self.hosts:
            raise ValueError(f"host names are unique, like 'worker-1': {name!r}")
        index = len(self.hosts) + 1
        if index > 254:
            raise ValueError("a /24 holds 254 hosts")
        host_mounts = _paths(mounts)
        for share in shared:
            host_mounts.update(share.mounts)
        namespace = f"{self.token}-{name}"
        address = f"{SUBNET}.{index}"
        peer = f"p{index}"  # in the switch namespace, next to the bridge
        self.namespaces.append(namespace)
        _ip("netns", "add", namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        veth = ["link", "add", "eth0", "type", "veth", "peer", "name", peer]
        _ip("-n", namespace, *veth, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", peer, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        host = Host(self, name, address, namespace, host_mounts)
        self.hosts[name] = host
        self._aliases[name] = tuple(aliases)
        self._write_hosts_file()
        return host

    def _write_hosts_file(self) -> None:
        """/etc/hosts on every host; rewritten in place (same inode), so that the
        processes already running see the hosts added after them."""
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        for host in self.hosts.values():
            lines.append(" ".join([host.address, host.name, *self._aliases[host.name]]))
        with open(self.hosts_file, "a+") as file:
            file.seek(0)
            file.truncate()
            file.write("\n".join(lines) + "\n")

    def tls_files(self, addresses: Sequence[str] | None = None) -> dict[str, str]:
        """A CA, and one certificate and key for the scheduler, workers and
        clients, valid for every host's address so far, 127.0.0.1 and localhost
        (Dask checks the CA, not the name; a host added later still works)."""
        if addresses is None:
            addresses = [host.address for host in self.hosts.values()] + ["127.0.0.1"]
        return make_tls_files(self.workdir / "tls", addresses)

    def pids(self) -> dict[str, list[int]]:
        """Every process in each of the network's namespaces."""
        return {namespace: namespace_pids(namespace) for namespace in self.namespaces}

    def describe(self, size: int = 4000) -> str:
        """The state and log tail of every process started, for failure messages."""
        return "\n".join(process.describe(size) for process in self.processes)

    # --- Dask -------------------------------------------------------------------

    def start_scheduler(
        self,
        host: Host,
        *,
        port: int = 8786,
        tls: Mapping[str, str] | None = None,
        dashboard: bool = False,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        mounts: Mounts | None = None,
        python: PathLike | None = None,
    ) -> DaskScheduler:
        """`dask scheduler` listening on the host's address (its own namespace,
        so the default port is free); TLS when given `tls` (see `tls_files`);
        run by `python` (`python -m dask`) when given, with the bind `mounts`
        added to the host's."""
        protocol = "tls" if tls else "tcp"
        args = [
            *_dask_command(python),
            "scheduler",
            f"--host={host.address}",
            f"--port={port}",
            f"--protocol={protocol}",
            f"--dashboard-address={host.address}:8787",  # HTTP routes run anyway
            "--dashboard" if dashboard else "--no-dashboard",
            *dask_tls_args(tls),
            *extra_args,
        ]
        process = host.start(args, label="scheduler", env=env, mounts=mounts)
        address = f"{protocol}://{host.address}:{port}"
        return DaskScheduler(host, process, address, dict(tls) if tls else None)

    def start_worker(
        self,
        host: Host,
        scheduler: DaskScheduler,
        *,
        name: str | None = None,
        nthreads: int = 1,
        resources: Mapping[str, float] | None = None,
        nanny: bool = True,
        mounts: Mounts | None = None,
        env: Mapping[str, str] | None = None,
        cwd: PathLike | None = None,
        extra_args: Sequence[str] = (),
        python: PathLike | None = None,
    ) -> DaskWorker:
        """`dask worker` on a host, connecting to `scheduler` (with its TLS
        files), named after the host unless `name` is given; its local directory
        is in the work folder; run by `python` (`python -m dask`) when given.
        Call `wait_for_workers` to know it joined."""
        name = name or host.name
        local = self.workdir / "dask" / name
        local.mkdir(parents=True, exist_ok=True)
        args = [
            *_dask_command(python),
            "worker",
            scheduler.address,
            f"--host={host.address}",
            f"--nthreads={nthreads}",
            f"--name={name}",
            f"--local-directory={local}",
            "--no-dashboard",
            "--nanny" if nanny else "--no-nanny",
            *dask_tls_args(scheduler.tls),
            *extra_args,
        ]
        if resources:
            pairs = " ".join(f"{key}={value}" for key, value in resources.items())
            args.append(f"--resources={pairs}")
        process = host.start(
            args, label=f"worker-{name}", env=env, cwd=cwd, mounts=mounts
        )
        return DaskWorker(host, name, process, local)

    def wait_for_workers(
        self,
        scheduler: DaskScheduler,
        n: int,
        *,
        timeout: float = 60,
        on: Host | None = None,
    ) -> dict[str, str]:
        """Waits (on host `on`, by default the scheduler's) until at least `n`
        workers are connected; returns every worker's name by its address.
        Fails with the log tails of every process when they do not connect."""
        host = on or scheduler.host
        result = host.run(
            [sys.executable, "-c", _WAIT_FOR_WORKERS, scheduler.address, str(n)]
            + [str(timeout)],
            env={**ENV, **scheduler.client_env()},
            timeout=timeout + 30,
        )
        if result.returncode != 0:
            raise HostCommandError(
                f"{n} workers did not connect to {scheduler.address} within "
                f"{timeout} s:\n{result.stderr[-3000:]}\n{self.describe()}"
            )
        return json.loads(result.stdout.strip().splitlines()[-1])
