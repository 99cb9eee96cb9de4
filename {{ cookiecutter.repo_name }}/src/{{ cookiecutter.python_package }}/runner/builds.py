"""Which build of the project a cluster's process imports. Builds (uploaded archives,
installed wheels) are named by content and stay on the cluster, so each run makes its
own the one imported. Pickled by value (the cluster lacks the project): stdlib only."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cloudpickle

#: On ``sys``: never sent by value, and outlives a module reload (``%reload_kedro``).
_NAME_ON_SYS = "_kedro_dask_process_name"
#: Also on ``sys``: the wheel build this process imports the project from.
_WHEEL_ON_SYS = "_kedro_dask_wheel"
#: Also on ``sys``: uploaded archives taken off ``sys.path`` for an installed build.
_SET_ASIDE_ON_SYS = "_kedro_dask_archives_set_aside"


def this_process() -> str:
    """Unique per process: a fork copies the name on ``sys`` but not the process id."""
    name = getattr(sys, _NAME_ON_SYS, None)
    name = name or vars(sys).setdefault(_NAME_ON_SYS, uuid.uuid4().hex)
    return f"{name}:{os.getpid()}"


def in_driver_process(driver_process: str) -> bool:
    """Whether this is the driver's process: its workers share modules and plugins."""
    return this_process() == driver_process


def use_build(build_file: str, driver_process: str) -> None:
    """Makes this process import the project from ``build_file`` (``<name>-<hash>``
    and ``.zip`` or ``.whl``; ``<name>-installed``: the process's own copy), even
    where a later build (other code) was put since."""
    if in_driver_process(driver_process):
        return  # the driver runs its own files
    # Forgets modules only if another build came first: a concurrent run's objects
    # must stay instances of the classes its nodes see.
    moved = _arrange_archives(build_file)
    if build_file.endswith(".whl"):  # another process may have reinstalled it
        _reinstall(build := build_file.removesuffix(".whl"))
        if moved or getattr(sys, _WHEEL_ON_SYS, None) != build:
            _forget_wheel(build, driver_process)
    elif moved:
        forget_package(build_file, driver_process)


def forget_package(build_file: str, driver_process: str) -> None:
    """Makes the next import of the build's package (``_package_of``)
    read the build now current (the driver's own code is current)."""
    package = _package_of(build_file)
    importlib.invalidate_caches()
    if not in_driver_process(driver_process):
        for name in [n for n in sys.modules if n.split(".")[0] == package]:
            del sys.modules[name]


def install_wheel(
    filename: str, content: bytes, build: str, requirements: bool, driver: str
) -> None:
    """Installs a build once per environment, which processes may share, and keeps
    the wheel for runs that go back to it (``use_build``)."""
    with _wheels() as wheels:
        kept = wheels / build / filename
        if not kept.exists():  # kept only once installed
            with tempfile.TemporaryDirectory(dir=wheels) as folder:
                wheel = Path(folder, filename)
                wheel.write_bytes(content)
                _pip_install(wheel, requirements)
                kept.parent.mkdir(exist_ok=True)
                wheel.replace(kept)
            (wheels / "current").write_text(build)
    _forget_wheel(build, driver)


def _forget_wheel(build: str, driver_process: str) -> None:
    forget_package(build, driver_process)
    setattr(sys, _WHEEL_ON_SYS, build)


def _package_of(build_file: str) -> str:
    return build_file.split("-", maxsplit=1)[0]


def _arrange_archives(build_file: str) -> bool:
    """Puts the build's archive first on ``sys.path``, or for an installed build sets
    every archive of the package aside (uploads stay for good); returns whether that
    changed what imports."""
    package = _package_of(build_file)
    aside: list[str] = vars(sys).setdefault(_SET_ASIDE_ON_SYS, [])
    archives = [
        path
        for path in sys.path
        if os.path.basename(path).startswith(f"{package}-") and path.endswith(".zip")
    ]
    if not build_file.endswith(".zip"):
        for path in archives:
            sys.path.remove(path)
        aside += archives
        return bool(archives)
    ours = [p for p in [*archives, *aside] if os.path.basename(p) == build_file]
    if not ours or sys.path[0] == ours[0]:
        return False
    (sys.path if ours[0] in archives else aside).remove(ours[0])
    sys.path.insert(0, ours[0])
    return True


def _reinstall(build: str) -> None:
    with _wheels() as wheels:
        current = wheels / "current"
        kept = sorted((wheels / build).glob("*.whl"))  # none before its first install
        if kept and (current.read_text() if current.exists() else "") != build:
            _pip_install(kept[0], requirements=False)
            current.write_text(build)


@contextmanager
def _wheels() -> Iterator[Path]:
    """The environment's kept wheels, locked against processes sharing it."""
    import fcntl  # noqa: PLC0415 (POSIX: on the cluster, not on Windows)

    folder = Path(sys.prefix, ".kedro-dask-builds")
    folder.mkdir(exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder


def _pip_install(wheel: Path, requirements: bool) -> None:
    pip = [sys.executable, "-m", "pip", "install", "--no-input", "--quiet"]
    pip += ["--disable-pip-version-check"]
    # Same name and version may hold new code: reinstall it, then add deps.
    steps = [[*pip, "--force-reinstall", "--no-deps", str(wheel)]]
    steps += [[*pip, str(wheel)]] if requirements else []
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"`pip install {wheel.name}` failed in {sys.executable} "
                f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}"
            )


cloudpickle.register_pickle_by_value(sys.modules[__name__])
