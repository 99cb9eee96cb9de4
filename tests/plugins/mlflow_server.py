"""A real `mlflow server` on 127.0.0.1, for the tests' kedro-mlflow projects.

Its backend store is a sqlite file in a temporary folder and it serves the
artifacts itself (``--artifacts-destination``, MLflow's default
``--serve-artifacts``), so a client (the driver, a Dask worker) needs nothing but
the server's address. It runs in its own process group and is stopped with
SIGTERM, then SIGKILL after a bounded wait, whatever the tests did.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import BIN, ENV
from ..shared import free_port, stop_groups, wait_until_answers

#: How long the server may take to answer (it takes 4-6 s here: it creates its
#: database tables and imports FastAPI and MLflow's UI).
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class MlflowServer:
    url: str
    #: The sqlite file of its backend store and the folder of its artifacts.
    database: Path
    artifacts: Path
    log: Path


def _environment() -> dict[str, str]:
    env = {key: value for key, value in ENV.items() if not key.startswith("MLFLOW_")}
    # The server's job runner (huey consumers, 7 more processes) serves MLflow's
    # GenAI jobs only: not needed for runs, params, metrics and artifacts.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[MlflowServer]:
    """Starts `mlflow server` with its store and log in ``folder`` and waits
    until it answers; stops it on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = MlflowServer(
        url=f"http://127.0.0.1:{port}",
        database=folder / "mlflow.db",
        artifacts=folder / "artifacts",
        log=folder / "server.log",
    )
    command = [
        str(BIN / "mlflow"),
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--backend-store-uri=sqlite:///{server.database}",
        f"--artifacts-destination={server.artifacts}",
        "--workers=1",
    ]
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        health = f"{server.url}/health"
        wait_until_answers(health, process, server.log, START_TIMEOUT, "mlflow server")
        yield server
    finally:
        # uvicorn's worker is a child of the `mlflow` process, in its group.
        stop_groups([process], STOP_TIMEOUT)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One server for the whole session: each kedro run logs to an experiment
    of its own."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as started:
        yield started
