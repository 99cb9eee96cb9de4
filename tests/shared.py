"""What the tests, their fixture libraries (scaleout, hosts, plugins) and the
benchmarks share, each written once: rendering the template as a user gets it,
free ports, bounded polling, log tails and stopping process groups.

Apart from conftest.py, because it imports the standard library only (and
cookiecutter or psutil where used): benchmarks/run_benchmarks.py imports it in
`nox -s bench`, which has no pytest. So a wait that runs out raises
``TimeoutError``, saying what was awaited: it fails a test, errors a fixture.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import psutil

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]


def render_as_is(output_dir: Path, **extra_context: str) -> Path:
    """Renders the template as `cookiecutter <repo> --no-input` does: what a user
    gets, with ``extra_context`` in place of the defaults."""
    from cookiecutter.main import cookiecutter

    output_dir.mkdir(parents=True, exist_ok=True)
    with hook_scripts_removed():
        return Path(
            cookiecutter(
                str(ROOT),
                no_input=True,
                output_dir=str(output_dir),
                extra_context=extra_context,
            )
        )


@contextlib.contextmanager
def hook_scripts_removed() -> Iterator[None]:
    """cookiecutter writes each rendered hook to a temporary file it never removes:
    in-process renders put them in a folder removed afterwards."""
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="hook-scripts-") as folder:
        tempfile.tempdir = folder
        try:
            yield
        finally:
            tempfile.tempdir = saved


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now on 127.0.0.1 (a server binds them a moment
    later); the probes are held open together, so the ports are distinct."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def free_port() -> int:
    return free_ports(1)[0]


def wait_for(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    details: Callable[[], str] | None = None,
) -> T:
    """Polls ``probe`` every ``interval`` s until it returns something truthy,
    and returns that; raises ``TimeoutError`` naming ``what`` (and ``details()``,
    e.g. a log's tail) after ``timeout`` s. An exception of ``probe`` (a process
    that exited, say) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            message = f"Timed out after {timeout} s waiting for {what}"
            raise TimeoutError(message + (f":\n{details()}" if details else ""))
        time.sleep(interval)


def tail(log: Path, size: int = 6000) -> str:
    """The end of a log file, for failure messages ("" while there is none)."""
    try:
        return log.read_text(errors="replace")[-size:]
    except FileNotFoundError:
        return ""


def answers(url: str) -> bool:
    """Whether an HTTP GET of ``url`` answers 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def wait_until_answers(
    url: str, process: subprocess.Popen, log: Path, timeout: float, what: str
) -> None:
    """Waits until the server ``process`` started answers at ``url``; raises with
    its log's tail if it exits first or does not answer in ``timeout`` s."""

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode}:\n{tail(log, 4000)}"
            )
        return answers(url)

    wait_for(up, timeout, f"{what} at {url}", 0.2, lambda: tail(log, 4000))


def group_alive(process: subprocess.Popen) -> bool:
    """Whether anything of the process group ``process`` leads still runs (the
    leader is reaped first, so that an exited group counts as empty)."""
    process.poll()
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL to the process group of ``process`` if it still runs, then reaps
    it (bounded). A group whose leader has exited is left alone: what it left
    running is for the test to see."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


def stop_groups(processes: Iterable[subprocess.Popen], grace: float) -> None:
    """SIGTERM to the process group of each process (each started with
    ``start_new_session=True``), SIGKILL to the groups that still hold a process
    after ``grace`` s, then reaps the leaders (bounded). What shuts down cleanly
    on SIGTERM (Dask, a server) gets to, a hung one cannot hold up the test, and
    nothing of a group (a nanny's worker, a server's child) outlives it. To stop
    processes one after another, call it once for each."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not any(map(group_alive, processes)), grace, "exits")
    for process in processes:
        if group_alive(process):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def alive(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` that still run (a zombie does not)."""
    import psutil

    running = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
    return running
