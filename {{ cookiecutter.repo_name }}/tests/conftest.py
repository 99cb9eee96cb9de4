"""Fixtures shared by the project's tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Test runs are not usage worth reporting: keep kedro-telemetry quiet and offline.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


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
    """Every file a run wrote under ``data/``, by path."""
    data = project / "data"
    return {
        path.relative_to(data).as_posix(): path.read_bytes()
        for path in sorted(data.rglob("*"))
        if path.is_file() and "01_raw" not in path.parts
    }
