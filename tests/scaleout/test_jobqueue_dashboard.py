"""dask-jobqueue serves its scheduler's dashboard on every interface (its default
``scheduler_options`` hold ``dashboard_address: ":8787"``), and the runner says so.

A real SLURMCluster starts its scheduler in a network namespace of the test's own:
the only place a test may listen beyond loopback. Its scheduler submits no job, so
no Slurm is needed. Run with ``nox -s scaleout``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..conftest import ENV, PACKAGE, render
from ..hosts.network import skip, unavailable

# The runner's own check, on the cluster and client a run of conf/slurm would make.
SNIPPET = f"""
import distributed
from dask_jobqueue import SLURMCluster
from {PACKAGE}.runner import cluster
from {PACKAGE}.runner.client_config import DaskClientConfig

config = DaskClientConfig(cluster_class="dask_jobqueue.SLURMCluster")
options = {{"host": "127.0.0.1"}}  # the dashboard as dask-jobqueue has it
with SLURMCluster(cores=1, memory="1GiB", scheduler_options=options) as jobs:
    with distributed.Client(jobs) as client:
        cluster._log_dashboard(client, config, jobs)
"""


def test_a_jobqueue_dashboard_on_every_interface_is_warned_about(tmp_path: Path):
    if reason := unavailable():
        skip(reason)
    project = render(tmp_path)
    namespace = f"kedro-dask-dashboard-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=10)
    try:
        inside = ["ip", "netns", "exec", namespace]
        subprocess.run(
            [*inside, "ip", "link", "set", "lo", "up"], check=True, timeout=10
        )
        done = subprocess.run(
            [*inside, sys.executable, "-c", SNIPPET],
            env={**ENV, "PYTHONPATH": str(project / "src")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], timeout=10)

    assert done.returncode == 0, done.stderr[-3000:]
    printed = " ".join(done.stdout.split())  # Kedro's rich logging wraps lines
    assert "WARNING The Dask dashboard listens on :8787, so anyone" in printed, printed
    assert "cluster_kwargs.scheduler_options.dashboard_address" in printed
