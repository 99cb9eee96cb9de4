"""Ctrl-C at every moment of a `kedro run` on the LocalCluster the runner starts:
while Kedro loads the project, while the cluster starts, during the first node,
mid-run and while the cluster closes. Each press must stop the run within
seconds, report it as interrupted (never as a success), leave no worker process
behind and print no Dask traceback.

`kedro run` is started as a terminal starts its foreground job (own process
group, SIGINT at its default) and gets SIGINT as a terminal sends it: to the
whole group (workers included), or to the kedro process alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from .faults import (
    ANY_DASHBOARD_PORT,
    SLOW_NODES,
    fault_project,
    finish,
    is_worker,
    markers,
    started_dask_run,
)
from .shared import alive, tail, wait_for

# What a run must say before the moment of each case.
CLUSTER_STARTING = "Starting a Dask cluster"
ALL_DONE = f"Completed {SLOW_NODES + 1} out of {SLOW_NODES + 1} nodes"
SUCCESS = "Pipeline execution completed successfully"

# A press must end the run this soon (the slowest seen here: see the printout).
EXIT_BOUND = 10.0


@dataclass(frozen=True)
class Moment:
    """When Ctrl-C is pressed: ``delay`` seconds after ``ready`` first holds."""

    name: str
    ready: Callable[[str, dict[str, list[int]]], bool]
    delay: float = 0.0
    #: How long each slow node sleeps: long, unless the run must reach its end.
    sleep_seconds: float = 60
    #: Whether the runner has started: before, Ctrl-C is Kedro's own business
    #: (it prints the traceback of the import it interrupts, with any runner).
    runner_started: bool = True

    def __str__(self) -> str:
        return f"{self.name}+{self.delay:g}s"


def _says(text: str) -> Callable[[str, dict[str, list[int]]], bool]:
    return lambda log, started: text in log


def _nodes_started(count: int) -> Callable[[str, dict[str, list[int]]], bool]:
    return lambda log, started: len(started) >= count


MOMENTS = [
    Moment("loading the project", lambda log, started: True, 0.5, runner_started=False),
    *(Moment("cluster start", _says(CLUSTER_STARTING), d) for d in (0, 0.2, 0.4, 0.6)),
    *(Moment("cluster start", _says(CLUSTER_STARTING), d) for d in (0.8, 1.0)),
    *(Moment("first node", _nodes_started(1), d) for d in (0, 0.1)),
    *(Moment("mid-run", _nodes_started(2), d) for d in (0.5, 1.5)),
    # The close takes about 50 ms (measured: a press 50 ms after the last
    # node's completion came after the success message), so presses follow
    # the completion within 10 ms.
    *(
        Moment("closing", _says(ALL_DONE), d, sleep_seconds=0.2)
        for d in (0, 0, 0.01, 0.01)
    ),
]
TARGETS = ("process group", "kedro process")
# 26 presses: every moment with both targets, except the closing ones (4 x 1).
CASES = [
    (moment, target)
    for moment in MOMENTS
    for target in (TARGETS if moment.name != "closing" else TARGETS[:1])
]
#: The suite's presses, one per phase the runner handles (closing's twice, as its
#: window is 50 ms); `nox -s interrupts` runs the rest, marked ``ctrl_c_matrix``.
IN_THE_SUITE = {
    "cluster start+0.4s-group",
    "first node+0s-process",
    "mid-run+0.5s-group",
    "closing+0s-group",
}
IDS = [f"{moment}-{target.split()[-1]}" for moment, target in CASES]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fault_project(tmp_path_factory.mktemp("interrupts"))


def _sigint_ignored(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(status.split("SigIgn:")[1].split()[0], 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def _swallowed(process: subprocess.Popen[bytes], log: Path) -> bool:
    """Whether Python ignored the press, which it does (saying "Exception ignored")
    when the press lands in a weakref callback or ``__del__``; if that leaves the
    import lock held, the runner raises the press itself."""
    try:
        process.wait(timeout=EXIT_BOUND)
        return False
    except subprocess.TimeoutExpired:
        output = log.read_text(errors="replace")
        ignored = "Exception ignored in" in output and "KeyboardInterrupt" in output
        if not ignored:
            pytest.fail(f"Ctrl-C did not stop the run in {EXIT_BOUND} s:\n{tail(log)}")
        return True


@pytest.mark.parametrize(
    ("moment", "target"),
    [
        pytest.param(
            *case,
            id=name,
            marks=() if name in IN_THE_SUITE else pytest.mark.ctrl_c_matrix,
        )
        for case, name in zip(CASES, IDS, strict=True)
    ],
)
def test_ctrl_c_stops_the_run_quietly_and_leaves_no_worker(
    project: Path, tmp_path: Path, moment: Moment, target: str
):
    with started_dask_run(
        project,
        tmp_path,
        "faults_slow",
        sleep_seconds=moment.sleep_seconds,
        dashboard_address=ANY_DASHBOARD_PORT,
    ) as run:
        process, started, log = run.process, run.markers, run.log
        assert not _sigint_ignored(process.pid)
        wait_for(
            lambda: process.poll() is not None
            or moment.ready(log.read_text(errors="replace"), markers(started)),
            120,
            f"the moment '{moment.name}'",
            interval=0.005,
        )
        time.sleep(moment.delay)
        descendants = psutil.Process(process.pid).children(recursive=True)
        workers = [child for child in descendants if is_worker(child)]
        if process.poll() is not None:
            pytest.fail(f"the run ended before Ctrl-C {moment}:\n{tail(log)}")
        sent = time.monotonic()
        if SUCCESS in log.read_text(errors="replace"):
            pytest.fail(f"the run had ended before Ctrl-C {moment}:\n{tail(log)}")
        press = os.killpg if target == "process group" else os.kill
        press(process.pid, signal.SIGINT)
        if swallowed := _swallowed(process, log):
            sent = time.monotonic()
            press(process.pid, signal.SIGINT)  # as a user would
        returncode = finish(process, 60, log)
        elapsed = time.monotonic() - sent
        workers_left = alive(workers)
        _, others_left = psutil.wait_procs(alive(descendants), timeout=3)
    output = log.read_text(errors="replace")
    again = " (Python swallowed the first press)" if swallowed else ""
    print(
        f"\n[Ctrl-C {moment} to the {target}] exit {returncode} after "
        f"{elapsed:.2f} s{again}; {len(markers(started))} nodes had started; "
        f"{len(workers)} workers, {len(workers_left)} alive at exit; it said: "
        f"{output.strip().splitlines()[-1].strip()!r}"
    )
    assert returncode != 0, output
    assert SUCCESS not in output, output
    assert elapsed < EXIT_BOUND, output
    for left in (workers_left, others_left):
        assert not left, [(child.pid, child.cmdline()) for child in left]
    for noise in ("Traceback", "distributed/", "CommClosedError"):
        assert noise not in output or not moment.runner_started, output
