"""Which build of the project a cluster's process imports. Builds (uploaded archives,
installed wheels) are named by content and stay on the cluster, so each run makes its
own the one imported. Pickled by value (the cluster lacks the project): stdlib only."""

from __future__ import annotations

import fnmatch
import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import cloudpickle

#: On ``sys``: never sent by value, and outlives a module reload (``%reload_kedro``).
_NAME_ON_SYS = "_kedro_dask_process_name"
#: Also on ``sys``: per package, the build whose modules this process imported.
_IN_USE_ON_SYS = "_kedro_dask_builds_in_use"


def this_process() -> str:
    """Unique per process: a fork copies the name on ``sys`` but not the process id."""
    name = getattr(sys, _NAME_ON_SYS, None)
    name = name or vars(sys).setdefault(_NAME_ON_SYS, uuid.uuid4().hex)
    return f"{name}:{os.getpid()}"


def in_driver_process(driver_process: str) -> bool:
    """Whether this is the driver's process: its workers share modules and plugins."""
    return this_process() == driver_process


def use_build(
    package: str, build_file: str, wheel: bytes, requirements: bool, folder: str
) -> None:
    """Makes this process import ``package`` from ``build_file`` (``<name>-<hash>``
    and ``.zip``, uploaded to ``folder``, or ``.whl``: the ``wheel``'s bytes, which
    pip installs with or without its ``requirements``; ``<name>-installed``: the
    process's own copy), even where a later build (other code) was put since. A
    wheel's name is the distribution's, which may not be the package's."""
    # Uploads stay for good: only this run's may shadow the installed copy.
    for path in fnmatch.filter(sys.path, f"*{os.sep}{package}-*.zip"):
        sys.path.remove(path)
    if build_file.endswith(".zip"):
        sys.path.insert(0, os.path.join(folder, build_file))
    elif build_file.endswith(".whl"):
        _install(build_file.removesuffix(".whl"), wheel, requirements)
    # Forgets modules only if another build came first: a concurrent run's objects
    # must stay instances of the classes its nodes see.
    in_use = vars(sys).setdefault(_IN_USE_ON_SYS, {})
    if in_use.get(package, f"{package}-installed") != build_file:
        importlib.invalidate_caches()
        for name in [n for n in sys.modules if n.split(".")[0] == package]:
            del sys.modules[name]
        in_use[package] = build_file


def _install(build: str, wheel: bytes, requirements: bool) -> None:
    """Pip installs the build unless the environment's current one: processes may
    share an environment, and another may have installed another build since."""
    import fcntl  # noqa: PLC0415 (POSIX: on the cluster, not on Windows)

    builds = Path(sys.prefix, ".kedro-dask-builds")
    (builds / build).mkdir(parents=True, exist_ok=True)
    with open(builds / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = builds / "current"
        if not current.exists() or current.read_text() != build:
            kept = builds / build / f"{build.rsplit('-', maxsplit=1)[0]}.whl"
            kept.write_bytes(wheel)
            _pip_install(kept, requirements)
            current.write_text(build)


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
