"""The example on real Slurm jobs (dask-jobqueue), with conf/slurm as shipped.

Only machine-specific values are added, as Dask config in the environment:
SLURM_CONF (our throwaway cluster), the partition, and 127.0.0.1 for the
scheduler and workers (loopback only). Run with ``nox -s scaleout``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import (
    DASK_RUNNER,
    ENV,
    data_files,
    outputs_under_sequential_runner,
    render,
)
from ..faults import finish, started_kedro
from ..shared import tail, wait_for
from .runs import counted, dask_run
from .slurm import SlurmCluster, slurm_cluster, why_no_slurm

pytestmark = pytest.mark.skipif(why_no_slurm() is not None, reason=str(why_no_slurm()))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def _env(slurm: SlurmCluster) -> dict[str, str]:
    return {
        **ENV,
        **slurm.env,
        "DASK_JOBQUEUE__SLURM__QUEUE": slurm.partition,
        "DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS": (
            "{'host': '127.0.0.1', 'dashboard_address': '127.0.0.1:0'}"
        ),
        "DASK_JOBQUEUE__SLURM__WORKER_EXTRA_ARGS": (
            "['--host', '127.0.0.1', '--dashboard-address', '127.0.0.1:0']"
        ),
    }


def _failed_run(
    slurm: SlurmCluster, folder: Path, params: str, timeout: float = 120
) -> tuple[str, float]:
    """Runs the example on Slurm with ``--params``; the run must fail. Returns
    its output and seconds."""
    _, done, took = dask_run(
        folder, "slurm", _env(slurm), f"--params={params}", timeout=timeout
    )
    assert done.returncode == 1, done.output[-5000:]
    return done.output, took


def test_example_on_slurm_jobs_matches_sequential(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """Adaptive (0..2) jobs run the example; outputs equal SequentialRunner's;
    never more than 2 jobs at once, and none left in squeue afterwards."""
    expected = outputs_under_sequential_runner(tmp_path / "sequential")
    ended_before = len(slurm.ended_jobs())
    with counted(lambda: len(slurm.squeue_jobs())) as counts:
        project, done, took = dask_run(
            tmp_path / "slurm", "slurm", _env(slurm), timeout=240
        )
    assert done.returncode == 0, done.output[-5000:]
    assert data_files(project) == expected
    slurm.wait_for_no_jobs(30)
    jobs = slurm.ended_jobs()[ended_before:]
    print(
        f"kedro run --env slurm: {took:.1f} s, {len(jobs)} jobs "
        f"({', '.join(job['JobState'] for job in jobs)}), "
        f"at most {max(counts)} at once"
    )
    assert 1 <= max(counts) <= 2, counts
    assert jobs and {job["JobState"] for job in jobs} <= {"CANCELLED", "COMPLETED"}


def test_job_that_never_starts_fails_within_the_bound(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """A walltime above the partition's MaxTime keeps the job PENDING for ever:
    the run fails after no_worker_timeout (given by --params, to keep the test
    short) with the paragraph, and the pending job is cancelled."""
    output, took = _failed_run(
        slurm,
        tmp_path / "pending",
        "dask_client.cluster_kwargs.walltime=02:00:00,dask_client.no_worker_timeout=10",
    )
    assert "No Dask worker was connected for" in output, output[-5000:]
    assert took < 60, took
    slurm.wait_for_no_jobs(15)


def test_a_partition_that_does_not_exist_fails_at_once_with_sbatchs_error(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """sbatch refuses the job, and dask-jobqueue never submits it again: the run
    fails as soon as that is known, not after no_worker_timeout (300 s in
    conf/slurm), with sbatch's error in its last paragraph; no Dask-internal
    error of closing the cluster is raised over the run's, and no job exists."""
    ended_before = len(slurm.ended_jobs())
    output, took = _failed_run(
        slurm,
        tmp_path / "no-partition",
        "dask_client.cluster_kwargs.queue=no_such_partition",
    )
    paragraph = output.rfind("could not start any of the")
    assert paragraph != -1, output[-5000:]
    assert "invalid partition specified: no_such_partition" in output[paragraph:]
    assert output.rfind("Traceback") < paragraph, output[-5000:]
    print(f"refused sbatch: the run failed after {took:.1f} s")
    assert took < 60, took
    assert slurm.squeue_jobs() == []
    assert len(slurm.ended_jobs()) == ended_before


def test_a_cluster_that_would_ask_for_no_job_is_refused_at_once(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """With neither `adapt` nor cluster_kwargs.n_workers a SLURMCluster submits no
    job, ever: the run is refused at once, not after no_worker_timeout (300 s)."""
    output, took = _failed_run(slurm, tmp_path / "no-jobs", "dask_client.adapt=null")
    printed = " ".join(output.split())
    assert "SLURMCluster started with no workers and dask_client has" in printed
    assert "Traceback" not in output, output[-5000:]
    assert took < 60, took
    assert slurm.squeue_jobs() == []


def test_a_failed_run_leaves_no_job(slurm: SlurmCluster, tmp_path: Path) -> None:
    """A node that raises (cross-validation with one fold) fails the run as
    under SequentialRunner, and the run's jobs are cancelled."""
    output, _ = _failed_run(
        slurm,
        tmp_path / "failing",
        # The whole block: --params replaces it (see conf/test/parameters.yml).
        "model_selection.folds=1,model_selection.repeats=1,"
        "model_selection.random_state=7",
        timeout=240,
    )
    assert "n_splits" in output and "--from-nodes" in output
    slurm.wait_for_no_jobs(15)


def test_ctrl_c_leaves_no_job(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once a
    job's worker runs a node: the run ends promptly, not with exit status 0
    (importing dask_jobqueue makes Ctrl-C call sys.exit(); the runner puts
    Kedro's handler back), and cancels its jobs."""
    project = render(tmp_path / "interrupted")
    log = tmp_path / "run.log"
    args = ("run", "--env=slurm", f"--runner={DASK_RUNNER}")
    with started_kedro(project, *args, log=log, env=_env(slurm)) as process:
        wait_for(
            lambda: process.poll() is not None
            or ("Running node" in log.read_text() and slurm.squeue_jobs()),
            120,
            "a node running on a Slurm job",
        )
        assert process.poll() is None, tail(log)
        sent = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        returncode = finish(process, 60, log)
        took = time.monotonic() - sent
    print(f"Ctrl-C on Slurm: exit {returncode} after {took:.1f} s")
    assert returncode != 0, tail(log)
    assert "Pipeline execution completed successfully" not in log.read_text()
    assert took < 30, took
    slurm.wait_for_no_jobs(15)


def test_an_unknown_slurm_cluster_keyword_fails_at_once(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """A misspelt SLURMCluster keyword is refused before any job is submitted,
    with one paragraph naming the class and the keyword."""
    output, took = _failed_run(
        slurm, tmp_path / "misspelt", "dask_client.cluster_kwargs.walltimes=00:10:00"
    )
    assert "Error: Could not start dask_jobqueue" in output, output[-3000:]
    assert "walltimes" in output and "Traceback" not in output
    assert took < 30, took
    assert slurm.squeue_jobs() == []
