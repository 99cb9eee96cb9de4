"""Fixtures shared by the project's tests."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
from pathlib import Path

import joblib
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Test runs are not usage worth reporting: keep kedro-telemetry quiet and offline.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

# A suite started with Ctrl-C ignored (a background job of a script, nohup) would
# pass that on to every process it starts: the Ctrl-C tests need Ctrl-C as a
# terminal delivers it. A handler, unlike an ignored signal, is not inherited.
signal.signal(signal.SIGINT, signal.default_int_handler)


def copy_project(destination: Path) -> Path:
    """Copies this project, with only its raw data, so that runs leave the real
    data folder untouched."""
    destination.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", destination)
    for folder in ("conf", "src", "data/01_raw"):
        shutil.copytree(
            PROJECT_ROOT / folder,
            destination / folder,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return destination


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def persisted_outputs(project: Path) -> dict[str, bytes]:
    """Every file a run wrote under ``data/`` (not the raw data), by path; a pickle
    by its value."""
    data = project / "data"
    return {
        path.relative_to(data).as_posix(): by_value(path)
        for path in sorted(data.rglob("*"))
        if path.is_file() and path.name != ".gitkeep" and "01_raw" not in path.parts
    }


def by_value(path: Path) -> bytes:
    """The file's bytes; for a pickle, a hash of the value it holds. A pickle's
    bytes also record which equal strings were one object in the process that
    wrote it (e.g. a scikit-learn model's parameter names), which differs from
    process to process; joblib's hash sees values only."""
    if path.suffix != ".pickle":
        return path.read_bytes()
    return ("value " + joblib.hash(pickle.loads(path.read_bytes()))).encode()
