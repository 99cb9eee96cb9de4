"""The example on a real dask-gateway server, with conf/gateway as shipped.

The gateway's address and the credentials come from Dask config in the
environment (``DASK_GATEWAY__*``), as conf/gateway/parameters.yml tells users:
nothing secret is written to conf/. Run with ``nox -s scaleout``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import ENV, data_files, outputs_under_sequential_runner
from .runs import counted, dask_run

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dask_gateway_server") is None,
    reason="dask-gateway-server is not installed (nox -s scaleout installs it)",
)

PASSWORD = "kedro-gateway-secret"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from .gateway import gateway_server

    folder = tmp_path_factory.mktemp("gateway")
    # The server gives its workers only a few variables; this machine pins
    # OpenBLAS's kernels (OPENBLAS_CORETYPE), without which the workers' models
    # differ from the driver's in the last bits.
    blas = {name: value for name, value in ENV.items() if name.startswith("OPENBLAS_")}
    with gateway_server(folder, PASSWORD, environment=blas) as server:
        yield server


def _env(gateway, password: str = PASSWORD) -> dict[str, str]:
    return {
        **ENV,
        "DASK_GATEWAY__ADDRESS": gateway.address,
        "DASK_GATEWAY__PROXY_ADDRESS": gateway.proxy_address,
        "DASK_GATEWAY__AUTH__KWARGS__USERNAME": gateway.username,
        "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": password,
    }


def test_example_on_a_gateway_cluster_matches_sequential(gateway, tmp_path: Path):
    """An adaptive (0..2) gateway cluster runs the example; outputs equal
    SequentialRunner's; never more than 2 workers at once; the gateway lists no
    cluster afterwards and no scheduler or worker process of it is left."""
    expected = outputs_under_sequential_runner(tmp_path / "sequential")
    with counted(gateway.worker_count) as workers:
        project, done, took = dask_run(
            tmp_path / "gateway", "gateway", _env(gateway), timeout=240
        )
    assert done.returncode == 0, done.output[-5000:]
    print(f"kedro run --env gateway: {took:.1f} s, at most {max(workers)} workers")
    assert 1 <= max(workers) <= 2, workers
    assert data_files(project) == expected
    assert PASSWORD not in done.output
    deadline = time.monotonic() + 30
    while (gateway.list_clusters() or gateway.cluster_processes()) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert gateway.list_clusters() == []
    assert gateway.cluster_processes() == []


def test_a_running_cluster_is_used_by_name_and_left_running(gateway, tmp_path: Path):
    """``cluster_class: dask_gateway.GatewayCluster.from_name``, as
    conf/gateway/parameters.yml documents it: the run uses a cluster started
    before it, outputs equal SequentialRunner's, and the cluster still runs
    afterwards, with its worker."""
    expected = outputs_under_sequential_runner(tmp_path / "sequential")
    name = gateway.running_cluster(workers=1)
    try:
        project, done, took = dask_run(
            tmp_path / "by-name",
            "gateway",
            _env(gateway),
            "--params=dask_client.cluster_class=dask_gateway.GatewayCluster.from_name,"
            f"dask_client.cluster_kwargs.cluster_name={name},dask_client.adapt=null",
            timeout=240,
        )
        assert done.returncode == 0, done.output[-5000:]
        print(f"kedro run on the running gateway cluster {name}: {took:.1f} s")
        assert data_files(project) == expected
        assert [cluster.name for cluster in gateway.list_clusters()] == [name]
        assert gateway.worker_count() == 1
    finally:
        gateway.stop_clusters()


def test_a_wrong_password_is_refused_at_once(gateway, tmp_path: Path):
    _, done, took = dask_run(
        tmp_path / "wrong",
        "gateway",
        _env(gateway, password="not-the-password"),
        timeout=120,
    )
    assert done.returncode == 1, done.output[-5000:]
    assert "Traceback" not in done.output, done.output[-5000:]
    assert "Error: Could not start dask_gateway" in done.output, done.output[-3000:]
    assert "401" in done.output, done.output[-3000:]
    assert "refused the credentials" in done.output, done.output[-3000:]
    assert "not-the-password" not in done.output
    assert took < 30, took
    assert gateway.list_clusters() == []
