"""Faults and load, with real processes on 127.0.0.1: a worker killed mid-run,
Ctrl-C, a failing node among 200, two runs sharing one scheduler, and 20 runs in
a row against one long-lived scheduler. Every test bounds its waits and stops
what it starts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from .conftest import (
    BIN,
    DASK_RUNNER,
    ENV,
    PACKAGE,
    CliCluster,
    cli_cluster,
    data_files,
    kedro,
    render,
    run_command,
)

T = TypeVar("T")

# The fault pipelines, added to a rendered project as the module
# <package>/fault_nodes.py and one pipeline package per pipeline.
FAULT_NODES = '''\
"""Pipelines of the template's fault tests (written by tests/test_faults.py)."""

from __future__ import annotations

import os
import time
from functools import partial, update_wrapper
from pathlib import Path

from kedro.pipeline import Pipeline, node

WIDTH, DEPTH = {width}, {depth}
CPU_NODES = 4
SLOW_NODES = 4


def _mark(options: dict, name: str) -> None:
    """Leaves <markers>/<node>.<pid> holding the time the node started."""
    if options["markers"]:
        folder = Path(options["markers"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{{name}}.{{os.getpid()}}").write_text(repr(time.time()))


def busy(options: dict, *, name: str, seed: int) -> dict:
    _mark(options, name)
    deadline = time.monotonic() + options["busy_seconds"]
    spin = 0
    while time.monotonic() < deadline:  # pure Python, holding the GIL
        spin = (spin * 31 + 7) % 1_000_003
    return {{"node": name, "value": sum(i * i for i in range(seed * 10_000))}}


def summarise(part: dict) -> dict:
    return {{"summary_of": part["node"], "value": part["value"] % 1_000_003}}


def total(*summaries: dict) -> dict:
    return {{"total": sum(s["value"] for s in summaries), "parts": len(summaries)}}


def slow(options: dict, *, name: str) -> dict:
    _mark(options, name)
    deadline = time.monotonic() + options["sleep_seconds"]
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {{"node": name, "value": 1}}


def wide(options: dict, *upstream: int, name: str, layer: int, index: int) -> int:
    _mark(options, name)
    if options["wide_sleep"]:
        time.sleep(options["wide_sleep"])
    if name == options["fail_node"]:
        Path(options["fail_time_file"]).write_text(repr(time.time()))
        raise ValueError(f"Planned failure in {{name}}")
    return (sum(upstream) * 31 + layer * 17 + index) % 1_000_003


def _named(function, **keywords):
    """``partial(function, **keywords)`` that Kedro can name and inspect."""
    return update_wrapper(partial(function, **keywords), function)


def cpu_pipeline() -> Pipeline:
    """CPU-bound nodes, each followed by a node that persists its summary."""
    nodes = []
    for i in range(CPU_NODES):
        nodes.append(
            node(
                _named(busy, name=f"cpu_{{i}}", seed=i + 1),
                "params:faults",
                f"faults_cpu_part_{{i}}",
                name=f"cpu_{{i}}",
            )
        )
        nodes.append(
            node(
                summarise,
                f"faults_cpu_part_{{i}}",
                f"faults_cpu_summary_{{i}}",
                name=f"summarise_{{i}}",
            )
        )
    summaries = [f"faults_cpu_summary_{{i}}" for i in range(CPU_NODES)]
    nodes.append(node(total, summaries, "faults_cpu_total", name="cpu_total"))
    return Pipeline(nodes)


def chain_pipeline() -> Pipeline:
    """One CPU-bound node takes the parameters; the nodes after it don't."""
    return Pipeline(
        [
            node(
                _named(busy, name="chain_0", seed=5),
                "params:faults",
                "faults_chain_part",
                name="chain_0",
            ),
            node(summarise, "faults_chain_part", "faults_chain_mid", name="chain_1"),
            node(total, "faults_chain_mid", "faults_chain_summary", name="chain_2"),
        ]
    )


def slow_pipeline() -> Pipeline:
    """Nodes that sleep for params faults.sleep_seconds."""
    nodes = [
        node(
            _named(slow, name=f"slow_{{i}}"),
            "params:faults",
            f"faults_slow_{{i}}",
            name=f"slow_{{i}}",
        )
        for i in range(SLOW_NODES)
    ]
    parts = [f"faults_slow_{{i}}" for i in range(SLOW_NODES)]
    nodes.append(node(total, parts, "faults_slow_total", name="slow_total"))
    return Pipeline(nodes)


def wide_pipeline() -> Pipeline:
    """DEPTH layers of WIDTH cheap nodes; node (k, i) takes the in-memory outputs
    of nodes (k-1, i) and (k-1, i+1); the last layer's outputs are persisted."""
    nodes = []
    for layer in range(DEPTH):
        for index in range(WIDTH):
            name = f"wide_{{layer}}_{{index}}"
            inputs = ["params:faults"]
            if layer:
                inputs += [
                    f"wide_data_{{layer - 1}}_{{index}}",
                    f"wide_data_{{layer - 1}}_{{(index + 1) % WIDTH}}",
                ]
            last = layer == DEPTH - 1
            output = f"faults_wide_out_{{index}}" if last else f"wide_data_{{layer}}_{{index}}"
            nodes.append(
                node(
                    _named(wide, name=name, layer=layer, index=index),
                    inputs,
                    output,
                    name=name,
                )
            )
    return Pipeline(nodes)
'''

WIDTH, DEPTH = 20, 10  # the wide pipeline: 200 nodes

PARAMETERS = """\
faults:
  markers: ""          # folder for the nodes' start markers; "" for none
  busy_seconds: 0      # CPU time of each cpu_* node
  sleep_seconds: 0     # sleep of each slow_* node
  wide_sleep: 0        # sleep of each wide_* node
  fail_node: ""        # the wide_* node that raises
  fail_time_file: ""   # where it writes the time it raises
"""

CATALOG = """\
"faults_cpu_summary_{{i}}":
  type: json.JSONDataset
  filepath: data/{folder}/cpu/summary_{{i}}.json

faults_cpu_total:
  type: json.JSONDataset
  filepath: data/{folder}/cpu/total.json

faults_chain_summary:
  type: json.JSONDataset
  filepath: data/{folder}/chain/summary.json

"faults_wide_out_{{i}}":
  type: json.JSONDataset
  filepath: data/{folder}/wide/out_{{i}}.json
"""

# `--env faults_b` writes the same datasets to another folder.
OTHER_ENV, OTHER_FOLDER = "faults_b", "10_faults_b"


def fault_project(output_dir: Path) -> Path:
    """A rendered project with the fault pipelines faults_cpu, faults_slow and
    faults_wide, their parameters, and an environment writing elsewhere."""
    project = render(output_dir)
    package = project / "src" / PACKAGE
    (package / "fault_nodes.py").write_text(
        FAULT_NODES.format(width=WIDTH, depth=DEPTH)
    )
    for name in ("cpu", "chain", "slow", "wide"):
        folder = package / "pipelines" / f"faults_{name}"
        folder.mkdir()
        (folder / "__init__.py").write_text(
            f"from {PACKAGE}.fault_nodes import {name}_pipeline as create_pipeline\n\n"
            f'__all__ = ["create_pipeline"]\n'
        )
    (project / "conf/base/parameters_faults.yml").write_text(PARAMETERS)
    (project / "conf/base/catalog_faults.yml").write_text(
        CATALOG.format(folder="09_faults")
    )
    (project / "conf" / OTHER_ENV).mkdir()
    (project / "conf" / OTHER_ENV / "catalog_faults.yml").write_text(
        CATALOG.format(folder=OTHER_FOLDER)
    )
    return project


DASK_CLIENT_KEYS = {"address", "dashboard_address"}


def params(**values: Any) -> str:
    """`--params` for the faults block and some dask_client keys."""
    items = []
    for key, value in values.items():
        block = "dask_client" if key in DASK_CLIENT_KEYS else "faults"
        items.append(f"{block}.{key}={value}")
    return "--params=" + ",".join(items)


# A LocalCluster's dashboard on a free port: on a taken 8787 (another test's
# cluster) Dask warns, naming its own files.
ANY_DASHBOARD_PORT = "127.0.0.1:0"


def outputs(files: dict[str, bytes], folder: str) -> dict[str, bytes]:
    """The files under ``folder``, keyed by their path inside it."""
    prefix = folder.rstrip("/") + "/"
    return {
        name[len(prefix) :]: content
        for name, content in files.items()
        if name.startswith(prefix)
    }


def wait_for(
    probe: Callable[[], T], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Polls ``probe`` until it returns something truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def started_kedro(
    project: Path, *args: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`kedro <args>` in its own process group, printing into ``log``; the group
    is killed on the way out if it is still running."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "kedro"), *args],
            cwd=project,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def finish(process: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    """Waits for ``process``, failing (the caller kills its group) after ``timeout``."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kedro run did not finish in {timeout} s:\n{tail(log)}")


def tail(log: Path, size: int = 6000) -> str:
    return log.read_text(errors="replace")[-size:]


def markers(folder: Path) -> dict[str, list[int]]:
    """The nodes that started, each with the process ids it started in."""
    started: dict[str, list[int]] = {}
    if folder.is_dir():
        for marker in folder.iterdir():
            name, _, pid = marker.name.rpartition(".")
            started.setdefault(name, []).append(int(pid))
    return started


def start_times(folder: Path) -> list[float]:
    return [float(marker.read_text()) for marker in folder.iterdir()]


def downstream_of(layer: int, index: int) -> set[str]:
    """The wide pipeline's nodes that need node (layer, index), directly or not."""
    reached, frontier = set(), {index}
    for below in range(layer + 1, DEPTH):
        # (k, i) takes (k-1, i) and (k-1, i+1): (k-1, j) feeds (k, j) and (k, j-1).
        frontier = {j for i in frontier for j in (i, (i - 1) % WIDTH)}
        reached |= {f"wide_{below}_{j}" for j in frontier}
    return reached


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


# --- 2. Ctrl-C ----------------------------------------------------------------


def _is_worker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "spawn_main" in " ".join(process.cmdline())
    return False


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


@pytest.mark.parametrize("target", ["process group", "kedro process"])
def test_ctrl_c_stops_the_run_and_its_local_cluster_quietly(
    tmp_path: Path, target: str
):
    project = fault_project(tmp_path / "project")
    started = tmp_path / "markers"
    log = tmp_path / "run.log"
    with started_kedro(
        project,
        "run",
        f"--runner={DASK_RUNNER}",
        "--pipelines=faults_slow",
        params(
            markers=started,
            sleep_seconds=120,
            dashboard_address=ANY_DASHBOARD_PORT,
        ),
        log=log,
    ) as process:
        wait_for(lambda: markers(started), 120, "a slow node to start")
        descendants = psutil.Process(process.pid).children(recursive=True)
        workers = [child for child in descendants if _is_worker(child)]
        assert workers, [child.cmdline() for child in descendants]
        sent = time.monotonic()
        if target == "process group":
            os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            os.kill(process.pid, signal.SIGINT)
        returncode = finish(process, 60, log)
        elapsed = time.monotonic() - sent
        # Workers and nannies are gone when kedro exits; multiprocessing's
        # resource tracker follows once it reads EOF from its closed pipe.
        workers_left = _alive(workers)
        _, others_left = psutil.wait_procs(_alive(descendants), timeout=3)
        print(
            f"\n[Ctrl-C to the {target}] exit {returncode} after {elapsed:.2f} s; "
            f"{len(workers)} worker processes, {len(workers_left)} alive at exit; "
            f"{len(others_left)} of {len(descendants)} child processes alive 3 s later"
        )
    output = log.read_text(errors="replace")
    assert returncode != 0, output
    assert elapsed < 10, output
    for left in (workers_left, others_left):
        assert not left, [(child.pid, child.cmdline()) for child in left]
    for noise in ("Traceback", "distributed/", "CommClosedError"):
        assert noise not in output, output


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
        deadline = time.monotonic() + 180
        while process.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"kedro run did not finish in 180 s:\n{tail(log)}")
            time.sleep(0.01)
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
    assert after["scheduler_plugins"] <= before["scheduler_plugins"] + 1, (
        before,
        after,
    )
