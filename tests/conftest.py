"""Shared helpers for the template's tests: rendering and bounded subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "iris_dask"
DASK_RUNNER = f"{PACKAGE}.runner.DaskRunner"
ENV = {
    **os.environ,
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "COLUMNS": "200",  # rich wraps log lines at the terminal width
}
BIN = Path(sys.executable).parent


@dataclass
class Finished:
    returncode: int
    output: str


def run_command(
    args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None
) -> Finished:
    """Runs a command in its own process group; on timeout the whole group (Dask
    workers included) is killed, so no test leaves processes behind."""
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=env or ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate(timeout=30)
            pytest.fail(f"{args} did not finish in {timeout} s:\n{output[-5000:]}")
    return Finished(process.returncode, output)


def kedro(
    *args: str, cwd: Path, timeout: float = 300, env: dict | None = None
) -> Finished:
    return run_command([str(BIN / "kedro"), *args], cwd, timeout, env)


def render(output_dir: Path, **extra_context: str) -> Path:
    """Renders the template with plain cookiecutter, as `--no-input` does."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return Path(
        cookiecutter(
            str(ROOT),
            no_input=True,
            output_dir=str(output_dir),
            extra_context=extra_context,
        )
    )


def data_files(project: Path) -> dict[str, bytes]:
    """Every file under the project's data folder but the shipped raw data."""
    data = project / "data"
    return {
        path.relative_to(data).as_posix(): path.read_bytes()
        for path in sorted(data.rglob("*"))
        if path.is_file() and path.name != ".gitkeep" and "01_raw" not in path.parts
    }


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project rendered with the defaults, for tests that only read it."""
    return render(tmp_path_factory.mktemp("rendered"))


@pytest.fixture
def fresh_project(tmp_path: Path) -> Path:
    """A project of its own, for tests that run it."""
    return render(tmp_path)


def copy_template(destination: Path) -> Path:
    """A copy of the template to break on purpose."""
    shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(".git", ".nox"))
    return destination
