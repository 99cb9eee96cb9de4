"""Safe by default: what a `kedro run` on the runner's LocalCluster exposes to the
network, and what it prints."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import psutil
import pytest

from .conftest import DASK_RUNNER, kedro, render
from .faults import fault_project, markers, started_dask_run
from .shared import tail, wait_for


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fault_project(tmp_path_factory.mktemp("safety"))


def listening_sockets(pid: int) -> dict[str, list[str]]:
    """``ip:port`` of every listening TCP socket of ``pid`` and its descendants,
    by process command line."""
    found: dict[str, list[str]] = {}
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
            name = " ".join(process.cmdline())[:80]
        except psutil.Error:
            continue
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                address = f"{connection.laddr.ip}:{connection.laddr.port}"
                found.setdefault(name, []).append(address)
    return found


def test_a_default_run_listens_on_loopback_only(project: Path, tmp_path: Path):
    """No dashboard_address in conf: Dask's own default would serve the dashboard
    on every interface."""
    with started_dask_run(project, tmp_path, "faults_slow", sleep_seconds=60) as run:
        wait_for(lambda: markers(run.markers), 120, "a node to start")
        sockets = listening_sockets(run.process.pid)
    print(f"\n[listening] {sockets}")
    addresses = [address for found in sockets.values() for address in found]
    assert len(addresses) >= 4, sockets  # scheduler, dashboard, two workers
    exposed = [
        address
        for address in addresses
        if not ipaddress.ip_address(address.rpartition(":")[0]).is_loopback
    ]
    assert not exposed, sockets
    assert "Dask dashboard: http://127.0.0.1:" in tail(run.log), tail(run.log)
    assert "The Dask dashboard listens on" not in tail(run.log)


SECRET = "s3cr3t-token-4f9a1c"


def test_credentials_never_reach_the_console_the_report_or_the_log(tmp_path: Path):
    """The example's models saved through a dataset with credentials; the run
    prints node logs forwarded from the workers and writes a performance report."""
    project = render(tmp_path)
    (project / "conf/local/credentials.yml").write_text(
        f"model_store:\n  secret_token: {SECRET}\n"
    )
    catalog = project / "conf/base/catalog.yml"
    catalog.write_text(
        catalog.read_text().replace(
            "  filepath: data/06_models/{namespace}.pickle\n",
            "  filepath: data/06_models/{namespace}.pickle\n"
            "  credentials: model_store\n",
        )
    )
    report = project / "data/08_reporting/dask-report.html"
    result = kedro(
        "run",
        f"--runner={DASK_RUNNER}",
        f"--params=dask_client.performance_report={report}",
        cwd=project,
    )
    assert result.returncode == 0, result.output
    assert "accuracy" in result.output  # a node's log, forwarded from a worker
    assert "hold credentials" not in result.output  # all on 127.0.0.1
    assert report.exists()
    for name, text in (
        ("console", result.output),
        ("report", report.read_text(errors="replace")),
        ("info.log", (project / "info.log").read_text(errors="replace")),
    ):
        assert SECRET not in text, name
