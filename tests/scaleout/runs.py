"""`kedro run` of a freshly rendered example project on a scale-out conf env."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..conftest import DASK_RUNNER, Finished, kedro, render


def dask_run(
    folder: Path, conf_env: str, env: dict[str, str], *options: str, timeout: float
) -> tuple[Path, Finished, float]:
    """Renders the example into ``folder`` and runs it on DaskRunner with
    ``--env=conf_env``; returns the project, the result and its seconds."""
    project = render(folder)
    start = time.monotonic()
    done = kedro(
        "run",
        f"--env={conf_env}",
        f"--runner={DASK_RUNNER}",
        *options,
        cwd=project,
        env=env,
        timeout=timeout,
    )
    return project, done, time.monotonic() - start


@contextlib.contextmanager
def counted(probe: Callable[[], int], timeout: float = 35) -> Iterator[list[int]]:
    """Calls ``probe`` (how many jobs or workers there are) about four times a
    second in a thread; yields the list of counts, which grows meanwhile. A
    probe that fails is skipped; the thread gets ``timeout`` s to stop."""
    counts = [probe()]
    stop = threading.Event()

    def count() -> None:
        while not stop.wait(0.25):
            with contextlib.suppress(Exception):
                counts.append(probe())

    watcher = threading.Thread(target=count, daemon=True)
    watcher.start()
    try:
        yield counts
    finally:
        stop.set()
        watcher.join(timeout=timeout)
