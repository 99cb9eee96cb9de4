"""Dask clusters for the runner tests, started once per test session.

Worker processes inherit this process's environment when a cluster starts, so the
environment is set first: the project's root and ``src`` on ``PYTHONPATH`` (for
the test pipelines' node functions) and the file the recording hooks append to.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import kedro.framework.project as kedro_project
import pytest
from distributed import Client, LocalCluster
from pluggy import PluginManager

from {{ cookiecutter.python_package }}.runner.kedro_internals import (
    _create_hook_manager,
    _register_hooks,
)

from .recording_project.hooks import LOG_VARIABLE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECORDING_PROJECT = "tests.runner.recording_project"


@pytest.fixture(scope="session")
def hook_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The file every recording hook appends to, in the driver and on workers."""
    path = tmp_path_factory.mktemp("hooks") / "calls.tsv"
    saved = {name: os.environ.get(name) for name in (LOG_VARIABLE, "PYTHONPATH")}
    os.environ[LOG_VARIABLE] = str(path)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(
            None, [str(PROJECT_ROOT), str(PROJECT_ROOT / "src"), saved["PYTHONPATH"]]
        )
    )
    yield path
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def recording_project(hook_log: Path) -> Iterator[str]:
    """Makes the recording project this process's Kedro project, as a session
    would, so that DaskRunner's workers load its hooks too."""
    previous = kedro_project.PACKAGE_NAME
    kedro_project.configure_project(RECORDING_PROJECT, preserve_logging=True)
    yield RECORDING_PROJECT
    if previous:
        kedro_project.configure_project(previous, preserve_logging=True)


@pytest.fixture
def hook_manager(recording_project: str, hook_log: Path) -> PluginManager:
    """The driver's hook manager, built the way a KedroSession builds it."""
    if kedro_project.PACKAGE_NAME != recording_project:  # another test ran a session
        kedro_project.configure_project(recording_project, preserve_logging=True)
    hook_log.write_text("")
    manager = _create_hook_manager()
    _register_hooks(manager, kedro_project.settings.HOOKS)
    return manager


@pytest.fixture(scope="session")
def process_cluster(hook_log: Path) -> Iterator[LocalCluster]:
    """Two single-threaded worker processes, as on a small real cluster."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def thread_cluster(hook_log: Path) -> Iterator[LocalCluster]:
    """Workers as threads of this process: no pickling between driver and nodes."""
    with LocalCluster(
        n_workers=1,
        threads_per_worker=4,
        processes=False,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster


@pytest.fixture(params=["process_cluster", "thread_cluster"])
def cluster(request: pytest.FixtureRequest) -> LocalCluster:
    return request.getfixturevalue(request.param)


@pytest.fixture
def observer(cluster: LocalCluster) -> Iterator[Client]:
    """A second client, to look at the scheduler without holding any of its keys."""
    with Client(cluster, set_as_default=False) as client:
        yield client
