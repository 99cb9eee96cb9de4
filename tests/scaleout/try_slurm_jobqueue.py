"""Tries dask-jobqueue's ``SLURMCluster`` on a real one-node Slurm cluster.

Run as root with the venv's Python (after ``.ci/install-slurm``)::

    /work/venv/bin/python tests/scaleout/try_slurm_jobqueue.py

It starts Slurm with ``slurm_cluster`` in a temporary folder, runs Dask workers
as real ``sbatch`` jobs (fixed scale, then adaptive), and then tries the settings
that must fail: an unknown partition, an unknown keyword, and jobs that ask for
more than the node has. It prints the timing of each step, and exits non-zero
if an expectation fails. It is not a pytest test: it says what Slurm does, for
the tests to assert.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dask_jobqueue import SLURMCluster
from distributed import Client

sys.path.insert(0, str(Path(__file__).parent))
from slurm import SlurmCluster, slurm_cluster, why_no_slurm  # noqa: E402

PYTHON = Path(sys.executable)
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.2f} s] {message}", flush=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"{name} ...")
    yield
    say(f"{name}: done in {time.monotonic() - start:.2f} s")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls ``condition``; returns the seconds it took, or raises after
    ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.25)
    return time.monotonic() - start


def jobqueue_cluster(slurm: SlurmCluster, **overrides: Any) -> SLURMCluster:
    """A ``SLURMCluster`` whose scheduler, workers and nannies listen on
    127.0.0.1 only, and whose jobs run this venv's Python."""
    options: dict[str, Any] = dict(
        cores=1,
        processes=1,
        memory="1GiB",
        walltime="00:10:00",
        queue=slurm.partition,
        job_name="dask-worker",
        python=str(PYTHON),
        job_script_prologue=[f". {PYTHON.parent / 'activate'}"],
        scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
        # The worker's HTTP server (health, metrics) runs even without a
        # dashboard, and listens on every address unless told otherwise.
        worker_extra_args=["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
        log_directory=str(slurm.folder / "jobs"),
        local_directory=str(slurm.folder / "scratch"),
        death_timeout=30,
    )
    options.update(overrides)
    return SLURMCluster(**options)


def where() -> dict[str, str]:
    """Runs on a worker: which host, process and Slurm job it is."""
    return {
        "hostname": socket.gethostname(),
        "pid": str(os.getpid()),
        "job": os.environ.get("SLURM_JOB_ID", "?"),
    }


def slow_square(x: int) -> int:
    time.sleep(2)
    return x * x


def print_jobs(slurm: SlurmCluster) -> None:
    jobs = slurm.squeue_jobs()
    say(f"squeue: {jobs if jobs else 'no job'}")


def fixed_scale(slurm: SlurmCluster) -> None:
    with step("SLURMCluster(...) with its scheduler"):
        cluster = jobqueue_cluster(slurm)
    print(cluster.job_script())
    try:
        with Client(cluster, timeout=30) as client:
            start = time.monotonic()
            cluster.scale(jobs=2)
            first = wait_until(
                lambda: len(client.scheduler_info()["workers"]) >= 1, 120, "a worker"
            )
            say(f"first worker connected {first:.2f} s after scale(jobs=2)")
            client.wait_for_workers(2, timeout=120)
            say(f"both workers connected {time.monotonic() - start:.2f} s after scale")
            print_jobs(slurm)
            assert [j.state for j in slurm.squeue_jobs()] == ["RUNNING"] * 2
            with step("client.submit of 8 tasks"):
                futures = [client.submit(where, pure=False) for _ in range(8)]
                seen = {tuple(sorted(f.result(timeout=60).items())) for f in futures}
            for entry in sorted(seen):
                say(f"  task ran on {dict(entry)}")
            hosts = client.run(socket.gethostname)
            say(f"worker addresses and hostnames: {hosts}")
            assert all(addr.startswith("tcp://127.0.0.1:") for addr in hosts), hosts
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
            listening = subprocess.run(
                ["ss", "-ltnpH"], capture_output=True, text=True
            ).stdout
            wide = [line for line in listening.splitlines() if "python" in line]
            wide = [line for line in wide if "127.0.0.1:" not in line]
            say(f"python sockets not on 127.0.0.1: {wide or 'none'}")
            errors = sorted((slurm.folder / "jobs").glob("*.err"))
            say(f"{errors[0].name} so far:\n{errors[0].read_text()}")
    finally:
        with step("cluster.close()"):
            cluster.close(timeout=30)
    took = wait_until(lambda: not slurm.squeue_jobs(), 30, "jobs to leave squeue")
    say(f"squeue empty {took:.2f} s after close()")


def adaptive(slurm: SlurmCluster) -> None:
    cluster = jobqueue_cluster(slurm)
    try:
        with Client(cluster, timeout=30) as client:
            cluster.adapt(minimum=0, maximum=2, interval="1s", wait_count=3)
            time.sleep(3)
            print_jobs(slurm)
            assert not slurm.squeue_jobs(), "adapt(minimum=0) submitted a job idle"
            with step("adaptive: 6 tasks of 2 s from no worker"):
                start = time.monotonic()
                futures = client.map(slow_square, range(6))
                took = wait_until(lambda: slurm.squeue_jobs(), 30, "a job")
                say(f"first job submitted {took:.2f} s after the tasks")
                most = 0
                while not all(f.done() for f in futures):
                    most = max(most, len(slurm.squeue_jobs()))
                    time.sleep(0.25)
                assert client.gather(futures) == [x * x for x in range(6)]
                say(f"at most {most} jobs at once")
                del futures
                say(f"results {time.monotonic() - start:.2f} s after submit")
            with step("adaptive: idle workers released"):
                took = wait_until(lambda: not slurm.squeue_jobs(), 120, "no job")
                say(f"squeue empty {took:.2f} s after the last result")
                workers = client.scheduler_info()["workers"]
                say(f"workers left: {len(workers)}")
    finally:
        cluster.close(timeout=30)
    slurm.wait_for_no_jobs(30)


def try_bad(slurm: SlurmCluster, name: str, **overrides: Any) -> None:
    """Builds a cluster with ``overrides``, asks for one job, and says what
    failed where, how fast, and what squeue shows then and after close()."""
    say(f"--- bad setting: {name}: {overrides}")
    start = time.monotonic()
    try:
        cluster = jobqueue_cluster(slurm, **overrides)
    except Exception as error:
        say(f"constructor raised after {time.monotonic() - start:.2f} s: {error!r}")
        print_jobs(slurm)
        return
    say(f"constructor returned after {time.monotonic() - start:.2f} s")
    try:
        start = time.monotonic()
        try:
            cluster.scale(jobs=1)
            with Client(cluster, timeout=30) as client:
                client.wait_for_workers(1, timeout=15)
            say(f"a worker came after {time.monotonic() - start:.2f} s (unexpected)")
        except Exception as error:
            say(f"after {time.monotonic() - start:.2f} s: {type(error).__name__}")
        print_jobs(slurm)
        for job in slurm.squeue_jobs():
            detail = slurm.run(["scontrol", "show", "job", str(job.job_id)]).stdout
            say("  " + " ".join(w for w in detail.split() if w.startswith("Reason")))
        # What sbatch itself says to the same job script.
        script = slurm.folder / f"bad-{name}.sh"
        script.write_text(cluster.job_script())
        start = time.monotonic()
        done = slurm.run(["sbatch", str(script)], check=False)
        say(
            f"sbatch directly: exit {done.returncode} after "
            f"{time.monotonic() - start:.2f} s: {(done.stdout + done.stderr).strip()}"
        )
        if done.returncode == 0:
            slurm.run(["scancel", done.stdout.split()[-1]])
    finally:
        cluster.close(timeout=30)
    took = wait_until(lambda: not slurm.squeue_jobs(), 30, "no job")
    say(f"squeue empty {took:.2f} s after close()")


def main() -> int:
    problem = why_no_slurm()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    # dask-jobqueue logs a failed sbatch here; show it.
    logging.basicConfig(level=logging.WARNING, format="    log: %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="try-slurm-") as tmp:
        start = time.monotonic()
        say("Slurm daemons start (munged, slurmctld, slurmd; node idle) ...")
        with slurm_cluster(Path(tmp) / "slurm") as slurm:
            say(f"Slurm daemons started: node idle in {time.monotonic() - start:.2f} s")
            say(f"node {slurm.node}: {slurm.node_state()}, SLURM_CONF={slurm.conf}")
            try:
                with slurm.exported():
                    fixed_scale(slurm)
                    adaptive(slurm)
                    try_bad(slurm, "partition", queue="no-such-partition")
                    try_bad(slurm, "partition-n_workers", queue="nope", n_workers=1)
                    try_bad(slurm, "keyword", no_such_keyword=1)
                    try_bad(slurm, "memory", memory="100GiB")
                    try_bad(slurm, "cores", cores=16, processes=1)
                    try_bad(slurm, "walltime", walltime="02:00:00")
            finally:
                start = time.monotonic()
                say("Slurm daemons stop (jobs cancelled first) ...")
        say(f"Slurm daemons stopped in {time.monotonic() - start:.2f} s")
        say(f"processes killed after the daemons stopped: {slurm.strays or 'none'}")
    left = subprocess.run(
        ["pgrep", "-a", "slurmstepd|slurmctld|slurmd|munged"],
        capture_output=True,
        text=True,
    ).stdout
    say(f"Slurm processes left: {left.strip() or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
