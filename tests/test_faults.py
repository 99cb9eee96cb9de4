"""Faults and load, with real processes on 127.0.0.1: a worker killed mid-run,
a failing node among 200, two runs sharing one scheduler, and 20 runs in
a row against one long-lived scheduler. Every test bounds its waits and stops
what it starts."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from .conftest import (
    DASK_RUNNER,
    PACKAGE,
    CliCluster,
    cli_cluster,
    data_files,
    kedro,
    run_command,
)
from .faults import (
    ANY_DASHBOARD_PORT,
    CPU_NODES,
    DEPTH,
    OTHER_ENV,
    OTHER_FOLDER,
    WIDTH,
    downstream_of,
    fault_project,
    finish,
    markers,
    outputs,
    params,
    start_times,
    started_dask_run,
    started_kedro,
)
from .shared import alive, tail, wait_for


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The fault pipelines' outputs under SequentialRunner."""
    project = fault_project(tmp_path_factory.mktemp("sequential"))
    result = kedro(
        "run", "--pipelines=faults_cpu,faults_chain,faults_wide", cwd=project
    )
    assert result.returncode == 0, result.output[-5000:]
    files = data_files(project)
    assert len(outputs(files, "09_faults/cpu")) == 5
    assert len(outputs(files, "09_faults/chain")) == 1
    assert len(outputs(files, "09_faults/wide")) == WIDTH
    return files


# --- 1. A worker killed mid-run ---------------------------------------------


@dataclass
class BusyRun:
    """A `kedro run` of a fault pipeline on a CLI cluster of 2 workers whose
    nodes stay busy for 3 s and leave markers naming their worker process."""

    project: Path
    markers: Path
    log: Path
    cluster: CliCluster
    workers: set[int]
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def busy_run_on_cli_cluster(tmp_path: Path, pipeline: str) -> Iterator[BusyRun]:
    project = fault_project(tmp_path / "project")
    started = tmp_path / "markers"
    log = tmp_path / "run.log"
    with cli_cluster(tmp_path / "cluster", n_workers=2) as cluster:
        workers = set(cluster.worker_pids().values())
        with started_kedro(
            project,
            "run",
            f"--runner={DASK_RUNNER}",
            f"--pipelines={pipeline}",
            params(address=cluster.address, busy_seconds=3, markers=started),
            log=log,
        ) as process:
            yield BusyRun(project, started, log, cluster, workers, process)


def test_a_worker_killed_mid_run_does_not_fail_the_run(
    tmp_path: Path, sequential: dict[str, bytes]
):
    with busy_run_on_cli_cluster(tmp_path, "faults_cpu") as run:
        # The second cpu_* node of a worker, killed while it is busy: the
        # worker also holds results of its first one, which the run still needs.
        def second_round() -> tuple[str, int] | None:
            by_worker: dict[int, list[tuple[float, str]]] = {}
            for marker in run.markers.glob("cpu_*"):
                name, _, pid = marker.name.rpartition(".")
                with contextlib.suppress(ValueError):  # being written
                    by_worker.setdefault(int(pid), []).append(
                        (float(marker.read_text()), name)
                    )
            for pid, nodes in by_worker.items():
                if pid in run.workers and len(nodes) >= 2:
                    return max(nodes)[1], pid
            return None

        victim_node, victim = wait_for(second_round, 120, "a worker's second cpu node")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        returncode = finish(run.process, 180, run.log)
        print(
            f"\n[worker kill] killed worker {victim} running {victim_node}; "
            f"run ended {time.monotonic() - killed_at:.1f} s later"
        )
        output = run.log.read_text(errors="replace")
        assert returncode == 0, tail(run.log)

        # The nanny replaced the worker; the node ran again elsewhere.
        def two_workers() -> dict[str, int] | None:
            pids = run.cluster.worker_pids()
            return pids if len(pids) == 2 else None

        assert victim not in wait_for(two_workers, 60, "2 workers").values()
    assert any(pid != victim for pid in markers(run.markers)[victim_node]), markers(
        run.markers
    )
    assert "Completed 9 out of 9 nodes" in output
    assert outputs(data_files(run.project), "09_faults/cpu") == outputs(
        sequential, "09_faults/cpu"
    )


def test_a_worker_killed_while_running_the_first_node_does_not_fail_the_run(
    tmp_path: Path, sequential: dict[str, bytes]
):
    """The worker running the only node that takes the parameters dies before
    any other worker needed them: the run must still have them."""
    with busy_run_on_cli_cluster(tmp_path, "faults_chain") as run:
        (victim,) = wait_for(
            lambda: markers(run.markers).get("chain_0"), 120, "chain_0 to start"
        )
        assert victim in run.workers
        os.kill(victim, signal.SIGKILL)
        returncode = finish(run.process, 180, run.log)
        assert returncode == 0, tail(run.log)
    assert any(pid != victim for pid in markers(run.markers)["chain_0"])
    assert outputs(data_files(run.project), "09_faults/chain") == outputs(
        sequential, "09_faults/chain"
    )


# --- 3. A failing node under load ---------------------------------------------


def test_a_failing_node_among_200_stops_the_run_within_seconds(tmp_path: Path):
    project = fault_project(tmp_path / "project")
    started = tmp_path / "markers"
    raised_file = tmp_path / "raised"
    log = tmp_path / "run.log"
    failing_layer, failing_index = 3, 5
    failing = f"wide_{failing_layer}_{failing_index}"
    with started_kedro(
        project,
        "run",
        f"--runner={DASK_RUNNER}",
        "--pipelines=faults_wide",
        params(
            markers=started,
            wide_sleep=0.02,
            fail_node=failing,
            fail_time_file=raised_file,
            dashboard_address=ANY_DASHBOARD_PORT,
        ),
        log=log,
    ) as process:
        finish(process, 180, log)
        ended = time.time()
    output = log.read_text(errors="replace")
    assert process.returncode == 1, output
    assert raised_file.exists(), output
    raise_to_exit = ended - float(raised_file.read_text())
    ran = set(markers(started))
    downstream = downstream_of(failing_layer, failing_index)
    print(
        f"\n[failing node] exit 1 {raise_to_exit:.2f} s after the raise; "
        f"{len(ran)} of {WIDTH * DEPTH} nodes started"
    )
    assert raise_to_exit < 5, output
    assert f"Planned failure in {failing}" in output
    assert f"Raised by Kedro node '{failing}'" in output
    assert "--from-nodes" in output
    assert failing in ran
    assert not ran & downstream, sorted(ran & downstream)
    assert len(ran) < WIDTH * DEPTH - len(downstream)  # the rest was cancelled
    # Branches that do not need the failing node may have finished meanwhile.
    written = {
        f"wide_{DEPTH - 1}_{name[len('out_') : -len('.json')]}"
        for name in outputs(data_files(project), "09_faults/wide")
    }
    assert not written & downstream, sorted(written & downstream)


# --- 4. Two runs sharing one scheduler ----------------------------------------


def test_two_runs_at_once_on_one_scheduler_both_match_sequential(
    tmp_path: Path, sequential: dict[str, bytes]
):
    project = fault_project(tmp_path / "project")
    runs = {"local": tmp_path / "markers-a", OTHER_ENV: tmp_path / "markers-b"}
    with cli_cluster(tmp_path / "cluster", n_workers=2) as cluster:
        with contextlib.ExitStack() as stack:
            processes = {
                env: (
                    stack.enter_context(
                        started_kedro(
                            project,
                            "run",
                            f"--env={env}",
                            f"--runner={DASK_RUNNER}",
                            "--pipelines=faults_wide",
                            params(
                                address=cluster.address,
                                markers=folder,
                                wide_sleep=0.01,
                            ),
                            log=tmp_path / f"{env}.log",
                        )
                    ),
                    tmp_path / f"{env}.log",
                )
                for env, folder in runs.items()
            }
            returncodes = {
                env: finish(process, 240, log)
                for env, (process, log) in processes.items()
            }
    for env, (_, log) in processes.items():
        assert returncodes[env] == 0, tail(log)
        assert "Completed 200 out of 200 nodes" in log.read_text(errors="replace")
    # The two runs overlapped in time.
    (a_first, a_last), (b_first, b_last) = (
        (min(times), max(times))
        for times in (start_times(folder) for folder in runs.values())
    )
    print(
        f"\n[concurrent runs] node start spans {a_first:.1f}-{a_last:.1f} and "
        f"{b_first:.1f}-{b_last:.1f}"
    )
    assert a_first < b_last and b_first < a_last
    files = data_files(project)
    expected = outputs(sequential, "09_faults/wide")
    assert outputs(files, "09_faults/wide") == expected
    assert outputs(files, f"{OTHER_FOLDER}/wide") == expected


# --- 5. Soak ------------------------------------------------------------------

SOAK = textwrap.dedent("""\
    import json, sys, time
    from pathlib import Path

    import psutil
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    project, address = Path(sys.argv[1]), sys.argv[2]
    scheduler, runs, report = psutil.Process(int(sys.argv[3])), int(sys.argv[4]), sys.argv[5]
    bootstrap_project(project)
    from {package}.runner import DaskRunner

    rss, seconds = [scheduler.memory_info().rss], []
    for _ in range(runs):
        begun = time.monotonic()
        with KedroSession.create(project_path=project) as session:
            session.run(
                pipeline_names=["faults_cpu"],
                runner=DaskRunner(address=address),
            )
        seconds.append(time.monotonic() - begun)
        rss.append(scheduler.memory_info().rss)
    Path(report).write_text(json.dumps({{"rss": rss, "seconds": seconds}}))
    """).format(package=PACKAGE)

SOAK_RUNS = 20
MB = 2**20


def _event_counts(client: Any) -> dict[str, int]:
    """The events the scheduler keeps (Dask caps each topic at 1000)."""
    events = client.get_events()
    return {
        "topics": len(events),
        "kedro_node_logs": len(events.get("kedro-node-logs", ())),
        "all": sum(len(topic) for topic in events.values()),
    }


def test_20_runs_in_a_row_leave_the_scheduler_as_they_found_it(
    tmp_path: Path, sequential: dict[str, bytes]
):
    project = fault_project(tmp_path / "project")
    report = tmp_path / "soak.json"

    def scheduler_state(dask_scheduler: Any) -> dict[str, Any]:
        return {
            "tasks": len(dask_scheduler.tasks),
            "clients": sorted(
                client
                for client in dask_scheduler.clients
                if client != "fire-and-forget"
            ),
            "datasets": len(dask_scheduler.extensions["publish"].datasets),
            "worker_plugins": len(dask_scheduler.worker_plugins),
            "scheduler_plugins": len(dask_scheduler.plugins),
            # Uploaded files that plugins hold, replayed to every new worker.
            "plugin_bytes": sum(
                len(plugin)
                for plugin in dask_scheduler.worker_plugins.values()
                if isinstance(plugin, bytes)
            )
            + sum(
                len(getattr(plugin, "data", b""))
                for plugin in dask_scheduler.plugins.values()
            ),
        }

    def worker_keys(dask_worker: Any) -> int:
        return len(dask_worker.data) + len(dask_worker.state.tasks)

    with cli_cluster(tmp_path / "cluster", n_workers=2) as cluster:
        scheduler_pid = cluster.processes[0].pid
        with cluster.client() as client:
            before = client.run_on_scheduler(scheduler_state)
            before["events"] = _event_counts(client)
        result = run_command(
            [
                sys.executable,
                "-c",
                SOAK,
                str(project),
                cluster.address,
                str(scheduler_pid),
                str(SOAK_RUNS),
                str(report),
            ],
            project,
            timeout=240,
        )
        assert result.returncode == 0, result.output[-5000:]
        with cluster.client() as client:
            after = client.run_on_scheduler(scheduler_state)
            after["events"] = _event_counts(client)
            datasets = client.list_datasets()
            keys = client.run(worker_keys)
            own_client = str(client.id)
        rss_now = psutil.Process(scheduler_pid).memory_info().rss
    numbers = json.loads(report.read_text())
    rss, seconds = numbers["rss"], numbers["seconds"]
    print(
        f"\n[soak] {SOAK_RUNS} runs, {sum(seconds):.1f} s "
        f"(first {seconds[0]:.2f} s, last {seconds[-1]:.2f} s); scheduler RSS "
        f"{rss[0] / MB:.1f} MB before, {rss[1] / MB:.1f} MB after run 1, "
        f"{rss[-1] / MB:.1f} MB after run {SOAK_RUNS}, {rss_now / MB:.1f} MB at the "
        f"end; scheduler state before {before}, after {after}"
    )
    files = data_files(project)
    assert outputs(files, "09_faults/cpu") == outputs(sequential, "09_faults/cpu")
    assert after["tasks"] == 0, after
    assert after["datasets"] == 0 and not datasets, (after, datasets)
    assert after["clients"] == [own_client], after
    assert not any(keys.values()), keys
    assert rss_now - rss[1] < 50 * MB, [round(value / MB, 1) for value in rss]
    # What each run leaves behind must not pile up on a long-lived scheduler.
    assert after["worker_plugins"] <= before["worker_plugins"] + 1, (before, after)
    # The project's upload, and the marker of recomputed nodes (run_setup):
    # one each for every run.
    assert after["scheduler_plugins"] <= before["scheduler_plugins"] + 2, (
        before,
        after,
    )


# --- 6. The scheduler dies mid-run ----------------------------------------------


def test_losing_the_scheduler_mid_run_fails_fast_and_a_rerun_resumes(
    tmp_path: Path, sequential: dict[str, bytes]
):
    with busy_run_on_cli_cluster(tmp_path, "faults_cpu") as run:

        def mid_run() -> bool:
            """A summary is saved while a cpu_* node still runs or, when Dask
            starts the second cpu_* nodes before any summary, both have started:
            either way seconds of work are left when the scheduler goes. And the
            driver has logged a finished node: with none, Kedro's hint is to run
            it all again, not --from-nodes (both cpu_* nodes of a worker can end
            before the driver hears of the first)."""
            log = run.log.read_text(errors="replace")
            if not re.search(r"Completed \d+ out of \d+ nodes", log):
                return False
            cpu_done = len(re.findall(r"Completed \d+ out of \d+ nodes: cpu_", log))
            summaries = list((run.project / "data/09_faults/cpu").glob("summary_*"))
            started = list(run.markers.glob("cpu_*"))
            return (summaries and cpu_done < CPU_NODES) or len(started) == CPU_NODES

        wait_for(mid_run, 120, "the middle of the run")
        scheduler = run.cluster.processes[0]
        os.killpg(scheduler.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        returncode = finish(run.process, 60, run.log)
        took = time.monotonic() - killed_at
    output = run.log.read_text(errors="replace")
    saved = outputs(data_files(run.project), "09_faults/cpu")
    print(
        f"\n[scheduler killed] exit {returncode} {took:.1f} s later; "
        f"{len(saved)} of 5 outputs saved"
    )
    assert returncode == 1, output
    assert took < 30, output
    assert "lost its connection to the Dask scheduler" in output, output
    resume = re.search(r'--from-nodes "([^"]+)"', output)
    assert resume and "resume with the --from-nodes" in output, output
    assert "Traceback" not in output, output
    assert saved.items() <= outputs(sequential, "09_faults/cpu").items()

    with cli_cluster(tmp_path / "cluster-again", n_workers=2) as cluster:
        rerun = kedro(
            "run",
            f"--runner={DASK_RUNNER}",
            "--pipelines=faults_cpu",
            f"--from-nodes={resume[1]}",
            params(address=cluster.address),
            cwd=run.project,
        )
    assert rerun.returncode == 0, rerun.output[-5000:]
    assert outputs(data_files(run.project), "09_faults/cpu") == outputs(
        sequential, "09_faults/cpu"
    )


# --- 7. A node that needs more memory than a worker may use -----------------------


def test_a_node_past_the_memory_limit_fails_the_run_with_what_to_change(
    tmp_path: Path,
):
    project = fault_project(tmp_path / "project")
    with started_dask_run(
        project,
        tmp_path,
        "faults_hog",
        hog_mb=2000,
        memory_limit="400MiB",
        dashboard_address=ANY_DASHBOARD_PORT,
    ) as run:
        process, started, log = run.process, run.markers, run.log
        wait_for(lambda: markers(started), 120, "the hog node to start")
        began = time.monotonic()
        descendants = psutil.Process(process.pid).children(recursive=True)
        returncode = finish(process, 120, log)
        took = time.monotonic() - began
        _, left = psutil.wait_procs(alive(descendants), timeout=3)
    output = log.read_text(errors="replace")
    message = " ".join(output[output.index("Error: ") :].split())
    print(
        f"\n[out of memory] exit {returncode} {took:.1f} s after the node started, "
        f"which ran {sum(map(len, markers(started).values()))} times"
    )
    assert returncode == 1, output
    assert "Kedro node 'hog' was running each time its Dask workers died" in message
    assert "memory_limit 400.00 MiB per worker" in message, message
    assert "threads_per_worker" in message
    assert "could not import what it needs" in message  # the other way workers die
    assert "Traceback" not in output, output
    assert not left, [(child.pid, child.cmdline()) for child in left]


# --- 8. A node that outruns its time limit ---------------------------------------


def test_a_node_past_its_tag_timeout_is_cancelled_and_named(tmp_path: Path):
    project = fault_project(tmp_path / "project")
    started = tmp_path / "markers"
    result = kedro(
        "run",
        f"--runner={DASK_RUNNER}",
        "--pipelines=faults_slow",
        params(
            markers=started,
            sleep_seconds=60,
            **{"tag_timeouts.slow": 1.5},
            dashboard_address=ANY_DASHBOARD_PORT,
        ),
        cwd=project,
        timeout=60,
    )
    first_start = min(float(m.read_text()) for m in started.iterdir())
    message = " ".join(result.output[result.output.index("Error: ") :].split())
    print(f"\n[time limit] {message[:120]}")
    assert result.returncode == 1, result.output
    assert "ran longer than 1.5 s, the limit dask_client.tag_timeouts" in message
    assert "its tag 'slow'" in message
    assert "Traceback" not in result.output, result.output
    assert time.time() - first_start < 20
