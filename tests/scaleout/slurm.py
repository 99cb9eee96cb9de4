"""A real one-node Slurm cluster on this machine, started and stopped by the tests.

dask-jobqueue's ``SLURMCluster`` meets Slurm only through ``sbatch``, ``squeue``
and ``scancel``, so it is only worth testing against real Slurm daemons: the job
scripts it writes, the options Slurm refuses and the jobs it leaves behind are
what a user's ``cluster_kwargs`` meet.

``slurm_cluster(folder)`` runs ``munged``, ``slurmctld`` and ``slurmd`` as child
processes of the caller, in the foreground, for one node (``localhost``, the
machine's real CPUs and memory as ``slurmd -C`` reports them). They listen on
127.0.0.1 only, on free ports, and keep their key, configuration, state, spool,
logs and pid files in ``folder`` (only munged's socket and a link to the spool
directory are in a short ``/tmp/slurm-*`` directory: see ``slurm_cluster``).
Nothing in /etc/slurm, /etc/munge or /run/munge is read or written, so clusters
can be started one after another. All three run as root, which ``slurmd`` needs
to start jobs as the user who submitted them.

Every wait is bounded. On exit every job is cancelled, the daemons get SIGTERM
and then SIGKILL, and any ``slurmstepd`` (which ``slurmd`` starts in a session of
its own, so it outlives ``slurmd``) and job process still alive is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ..shared import free_ports, stop_groups, tail, wait_for

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
# The daemons live in sbin, which a non-login shell's PATH may lack.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
NODE = "localhost"

CONF_TEMPLATE = """\
# Written by tests/scaleout/slurm.py: a throwaway one-node cluster on 127.0.0.1.
ClusterName=scaleout
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
# Bind to the address of localhost (127.0.0.1), not to every address.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
# Root runs everything: slurmd must, to start jobs as their user, and there is
# no need for a slurm account to own the state files.
SlurmUser=root
SlurmdUser=root
# Daemons and client commands all find our munged through this socket.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={folder}/state
# A short path: slurmstepd makes its unix sockets in the spool directory.
SlurmdSpoolDir={short}/spool
SlurmctldPidFile={folder}/run/slurmctld.pid
SlurmdPidFile={folder}/run/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={folder}/plugstack.conf
# No cgroups: job processes are tracked through /proc, and neither tasks nor
# accounting need a plugin, so no cgroup.conf either.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# A line per job that ended (even one cancelled while PENDING): how the tests
# count the jobs a run submitted, without slurmdbd.
JobCompType=jobcomp/filetxt
JobCompLoc={folder}/log/jobcomp.log
MpiDefault=none
MailProg=/bin/true
# Cores and memory are consumable: each job gets what it asks for, and sbatch
# refuses a job that asks for more than the node has.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without it a job that gives no --mem gets all the node's memory, so one such
# job would keep every other job PENDING.
DefMemPerCPU=1024
SchedulerType=sched/backfill
ReturnToService=2
# A cancelled job gets SIGKILL 5 s after SIGTERM (Slurm's default is 30 s).
KillWait=5
NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
# A job asking for a longer walltime than MaxTime is accepted but stays PENDING
# (reason PartitionTimeLimit), which is how a test makes a job that never starts.
PartitionName={partition} Nodes={node} Default=YES MaxTime={max_time} State=UP
"""

# What `slurmd -C` prints that slurm.conf's node line takes as it is.
HARDWARE_KEYS = (
    "CPUs",
    "Boards",
    "SocketsPerBoard",
    "CoresPerSocket",
    "ThreadsPerCore",
    "RealMemory",
)


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def why_no_slurm() -> str | None:
    """Why a Slurm cluster cannot be started here, or None when it can."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]
    if missing:
        return (
            f"Slurm is not installed (no {', '.join(missing)}): "
            "run .ci/install-slurm as root"
        )
    if os.geteuid() != 0:
        return "a Slurm cluster needs root: slurmd starts jobs as their user"
    return None


def slurm_installed() -> bool:
    """Whether munge's and Slurm's daemons and client commands are all here."""
    return all(_which(name) for name in (*DAEMONS, *CLIENTS))


@dataclass(frozen=True)
class SlurmJob:
    """One line of ``squeue``: a job that is pending, running or completing."""

    job_id: int
    name: str
    state: str  # PENDING, RUNNING, COMPLETING, ...
    reason: str  # why it is pending (Resources, PartitionTimeLimit, ...) or None


@dataclass
class SlurmCluster:
    """The running cluster: how to reach it, and helpers for the tests."""

    folder: Path
    conf: Path
    partition: str
    node: str
    # The variables a client (sbatch, squeue, dask-jobqueue) needs to see.
    env: dict[str, str]
    # Processes found still running after the daemons stopped, and killed.
    strays: list[str] = field(default_factory=list)

    def environ(self) -> dict[str, str]:
        """This process's environment with ours in place of any other Slurm's."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
        return {**inherited, **self.env}

    @contextlib.contextmanager
    def exported(self) -> Iterator[None]:
        """Puts ``env`` in ``os.environ`` for code that runs the Slurm commands
        itself, such as dask-jobqueue; the old values come back on exit."""
        saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def run(
        self, args: Sequence[str], timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs a command (``sbatch``, ``squeue``, ...) against this cluster."""
        done = subprocess.run(
            list(args),
            env=self.environ(),
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{list(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def squeue_jobs(self) -> list[SlurmJob]:
        """The jobs not yet finished; every job on this controller is ours."""
        out = self.run(["squeue", "--noheader", "--format=%i|%T|%r|%j"]).stdout
        jobs = []
        for line in out.splitlines():
            job_id, state, reason, name = line.split("|", 3)
            jobs.append(SlurmJob(int(job_id), name, state, reason))
        return jobs

    def ended_jobs(self) -> list[dict[str, str]]:
        """Every job that has ended (completed, failed, cancelled, even while
        PENDING), oldest first, with the fields of Slurm's job completion log
        (JobId, Name, JobState, ...)."""
        log = self.folder / "log" / "jobcomp.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [
            dict(word.split("=", 1) for word in line.split() if "=" in word)
            for line in lines
            if line.strip()
        ]

    def node_state(self) -> str:
        """The node's state as sinfo says it: idle, mixed, allocated, down, ..."""
        return self.run(
            ["sinfo", "--noheader", "--Node", f"--nodes={self.node}", "--format=%T"]
        ).stdout.strip()

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancels every job and waits until squeue shows none (not even one
        still COMPLETING)."""
        jobs = self.squeue_jobs()
        if jobs:
            self.run(["scancel", *(str(job.job_id) for job in jobs)])
        self.wait_for_no_jobs(timeout)

    def wait_for_no_jobs(self, timeout: float = 30) -> None:
        wait_for(lambda: not self.squeue_jobs(), timeout, "squeue to show no job", 0.25)


def _hardware() -> str:
    """The node's CPUs and memory as slurmd itself measures them: slurmd marks a
    node whose slurm.conf promises more than it finds as invalid."""
    out = subprocess.run(
        [_which("slurmd") or "slurmd", "-C"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    fields = dict(word.split("=", 1) for word in out.split() if "=" in word)
    return " ".join(f"{key}={fields[key]}" for key in HARDWARE_KEYS if key in fields)


@dataclass
class _Daemon:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _start(name: str, args: list[str], logs: Path) -> _Daemon:
    """Starts a daemon in the foreground, in a session of its own (so a terminal's
    Ctrl-C reaches us, not it, and we stop it in order); its output goes to
    ``logs/<name>.out``."""
    log = logs / f"{name}.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_which(name) or name, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _Daemon(name, process, log)


def _kill_strays(folder: Path, conf: Path) -> list[str]:
    """Kills what outlived slurmd: each ``slurmstepd`` holding a file in
    ``folder`` open (slurmd's log) with every process of its session, and any
    process of one of our jobs (``SLURM_CONF`` is ours) that left that session.
    Returns a line for each process killed."""
    sessions: set[int] = set()
    victims: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if process.info["name"] == "slurmstepd" and any(
                Path(f.path).is_relative_to(folder) for f in process.open_files()
            ):
                sessions.add(os.getsid(process.pid))
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(process.pid) in sessions:
                victims[process.pid] = process
                continue
            environ = process.environ()
            if "SLURM_JOB_ID" in environ and environ.get("SLURM_CONF") == str(conf):
                victims[process.pid] = process
    killed = []
    for process in victims.values():
        with contextlib.suppress(psutil.Error):
            killed.append(f"{process.pid} {' '.join(process.cmdline())}")
            process.kill()
    psutil.wait_procs(list(victims.values()), timeout=10)
    return killed


@contextlib.contextmanager
def slurm_cluster(
    folder: Path,
    partition: str = "scaleout",
    max_time: str = "01:00:00",
    start_timeout: float = 60,
    extra_conf: str = "",
) -> Iterator[SlurmCluster]:
    """Starts munged, slurmctld and slurmd for one node, waits (at most
    ``start_timeout`` seconds) until sinfo shows the node idle, yields the
    cluster, and on exit cancels every job and stops everything it started.

    ``extra_conf`` is appended to slurm.conf: ``"EnforcePartLimits=ALL\n"``, for
    one, makes sbatch refuse at once a job asking for more CPUs or a longer
    walltime than the partition allows, which Slurm by default accepts and keeps
    PENDING for ever (reason PartitionConfig or PartitionTimeLimit)."""
    folder = folder.resolve()
    # A folder used before starts afresh: no old jobs are recovered.
    for sub in ("state", "spool", "run"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    for sub in ("munge", "state", "spool", "log", "run"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    logs = folder / "log"
    hardware = _hardware()
    ctld_port, slurmd_port = free_ports(2)
    # A unix socket's path has at most 107 bytes, and munged refuses a socket
    # unless every directory above it is executable by all (pytest's
    # /tmp/pytest-of-root is 0700). So munged's socket, and slurmstepd's (made
    # in the spool directory, reached through a link), go in a short directory.
    short = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    munge_socket = short / "munge.socket"
    key = folder / "munge" / "munge.key"
    conf = folder / "slurm.conf"
    cluster = SlurmCluster(folder, conf, partition, NODE, {"SLURM_CONF": str(conf)})
    daemons: list[_Daemon] = []
    try:
        short.chmod(0o755)
        (short / "spool").symlink_to(folder / "spool")
        # munged wants its key owned by its user and readable by nobody else.
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        (folder / "munge").chmod(0o700)
        (folder / "plugstack.conf").write_text("")
        conf.write_text(
            CONF_TEMPLATE.format(
                folder=folder,
                short=short,
                ctld_port=ctld_port,
                slurmd_port=slurmd_port,
                munge_socket=munge_socket,
                node=NODE,
                hardware=hardware,
                partition=partition,
                max_time=max_time,
            )
            + extra_conf
        )
        daemons.append(
            _start(
                "munged",
                [
                    "--foreground",
                    f"--socket={munge_socket}",
                    f"--key-file={key}",
                    f"--log-file={logs / 'munged.log'}",
                    f"--pid-file={folder / 'run' / 'munged.pid'}",
                    f"--seed-file={folder / 'munge' / 'munged.seed'}",
                ],
                logs,
            )
        )
        wait_for(
            lambda: munge_socket.exists() or daemons[0].process.poll() is not None,
            10,
            "munged's socket",
            0.25,
        )
        daemons.append(_start("slurmctld", ["-D", "-f", str(conf)], logs))
        daemons.append(_start("slurmd", ["-D", "-N", NODE, "-f", str(conf)], logs))

        def node_idle() -> bool:
            for daemon in daemons:
                if daemon.process.poll() is not None:
                    raise RuntimeError(
                        f"{daemon.name} exited with {daemon.process.returncode}:\n"
                        + tail(daemon.log, 2000)
                    )
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                return cluster.node_state() == "idle"
            return False

        wait_for(
            node_idle,
            start_timeout,
            f"sinfo to show {NODE} idle",
            0.25,
            lambda: "\n".join(f"--- {d.name}:\n{tail(d.log, 2000)}" for d in daemons),
        )
        yield cluster
    finally:
        alive = [d.name for d in daemons if d.process.poll() is None]
        if "slurmctld" in alive:
            with contextlib.suppress(
                RuntimeError, TimeoutError, OSError, subprocess.SubprocessError
            ):
                # Without slurmd, jobs stay COMPLETING: no use waiting for them.
                cluster.cancel_all(timeout=30 if "slurmd" in alive else 0)
        # One after another, munged last: the others talk to it until they have
        # stopped. A group's leftovers (slurmctld's slurmscriptd) go too.
        for daemon in daemons[1:][::-1] + daemons[:1]:
            stop_groups([daemon.process], 10)
        cluster.strays = _kill_strays(folder, conf)
        shutil.rmtree(short, ignore_errors=True)
