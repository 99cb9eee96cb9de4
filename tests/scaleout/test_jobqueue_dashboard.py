"""dask-jobqueue serves its scheduler's dashboard on every interface (its default
``scheduler_options`` hold ``dashboard_address: ":8787"``), and the runner says so.

A real SLURMCluster starts its scheduler in a network namespace of the test's own:
the only place a test may listen beyond loopback. Its scheduler submits no job, so
no Slurm is needed. Run with ``nox -s scaleout``.
"""

from __future__ import annotations

from pathlib import Path

from ..conftest import ENV, PACKAGE, render
from ..hosts.network import SimulatedNetwork

# The runner's own check, on the cluster and client a run of conf/slurm would make.
SNIPPET = f"""
import distributed
from dask_jobqueue import SLURMCluster
from {PACKAGE}.runner import cluster

options = {{"host": "127.0.0.1"}}  # the dashboard as dask-jobqueue has it
with SLURMCluster(cores=1, memory="1GiB", scheduler_options=options) as jobs:
    with distributed.Client(jobs) as client:
        cluster._log_dashboard(client, jobs)
"""


def test_a_jobqueue_dashboard_on_every_interface_is_warned_about(tmp_path: Path):
    project = render(tmp_path)
    with SimulatedNetwork(tmp_path / "net") as net:
        login = net.add_host("login")
        output = login.python(
            SNIPPET, env={**ENV, "PYTHONPATH": str(project / "src")}, timeout=60
        )

    printed = " ".join(output.split())  # Kedro's rich logging wraps lines
    assert "WARNING The Dask dashboard listens on :8787, so anyone" in printed, printed
    assert "cluster_kwargs.scheduler_options.dashboard_address" in printed
