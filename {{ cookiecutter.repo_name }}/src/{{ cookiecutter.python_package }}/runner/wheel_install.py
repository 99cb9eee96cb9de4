"""Installing the project's wheel (``dask_client.install_wheel``) on the scheduler
and every worker, present and future, with pip.

The processes these plugins run in do not have the project yet, so the runner
sends this module to them by value (cloudpickle) rather than by name: it must
import nothing but the standard library and distributed.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import distributed
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin


class WheelInstallError(RuntimeError):
    """pip could not install the wheel where the plugin runs."""


def this_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def install_wheel(
    filename: str, content: bytes, requirements: bool, driver: tuple[str, int]
) -> None:
    """pip-installs the wheel into this process's environment and makes its
    package importable at once, even where an older build of it was imported
    (but in the driver's own process: a cluster of threads keeps its code).

    Processes that share an environment (the scheduler and workers of one
    machine, or a shared file system) install one after the other, and each
    build once: two pips replacing the same package at once break it.
    """
    digest = hashlib.sha256(content).hexdigest()[:16]
    installed = Path(sys.prefix, ".kedro-dask-wheels", f"{filename}.{digest}")
    installed.parent.mkdir(exist_ok=True)
    import fcntl  # noqa: PLC0415 (POSIX: here, on the cluster, not on Windows)

    with open(installed.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed.exists():
            _pip_install(filename, content, requirements)
            installed.touch()
    importlib.invalidate_caches()
    if this_process() == driver:
        return
    package = filename.split("-", maxsplit=1)[0]
    for name in [n for n in sys.modules if n.split(".")[0] == package]:
        del sys.modules[name]  # the next node imports the new code


def _pip_install(filename: str, content: bytes, requirements: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        wheel = Path(folder) / filename
        wheel.write_bytes(content)
        pip = [sys.executable, "-m", "pip", "install", "--no-input"]
        pip += ["--disable-pip-version-check", "--quiet"]
        # The same name and version may hold new code: reinstall the wheel itself,
        # then (if asked) let pip add whatever requirements are missing.
        steps = [[*pip, "--force-reinstall", "--no-deps", str(wheel)]]
        if requirements:
            steps.append([*pip, str(wheel)])
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise WheelInstallError(
                    f"`pip install {filename}` failed in {sys.executable} "
                    f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}"
                )


class _Wheel:
    """The wheel's bytes travel inside the plugin: the cluster's machines need
    no access to the driver's files."""

    idempotent = True  # named after the wheel's content: installed once

    def __init__(self, filename: str, content: bytes, requirements: bool) -> None:
        self.filename = filename
        self.content = content
        self.requirements = requirements
        self.driver = this_process()

    async def install(self) -> None:
        """Off the event loop: pip takes seconds, heartbeats must go on."""
        await asyncio.to_thread(
            install_wheel, self.filename, self.content, self.requirements, self.driver
        )


class InstallWheelOnWorkers(_Wheel, WorkerPlugin):
    """Installs the wheel on every worker, those that join later included."""

    async def setup(self, worker: distributed.Worker) -> None:
        await self.install()


class InstallWheelOnScheduler(_Wheel, SchedulerPlugin):
    """The scheduler unpickles the task graph, which names the project's code."""

    async def start(self, scheduler: distributed.Scheduler) -> None:
        await self.install()
