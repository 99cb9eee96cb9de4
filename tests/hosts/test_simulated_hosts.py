"""Smoke tests of the simulated hosts (network.py): each host has its own address
and its own disk where a test says so, a shared directory is shared, TLS holds
between hosts, a late worker joins, and nothing is left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import ENV
from . import network
from .network import PREFIX, SimulatedNetwork, dask_tls_env, namespaces

# Run on the driver host: what each worker and the driver host itself see at the
# same paths, each worker writing a file in the shared directory first.
LOOK_AROUND = """
import json, os, socket, sys
from pathlib import Path
from distributed import Client

address, marker, shared = sys.argv[1:4]

def look(dask_worker):
    name = dask_worker.name
    Path(shared, f"{name}.txt").write_text(f"written on {socket.gethostname()}")
    return {"name": name, "hostname": socket.gethostname(),
            "marker": Path(marker).read_text()}

with Client(address, timeout=30, set_as_default=False) as client:
    workers = client.run(look)
    scheduler = client.scheduler_info()["address"]
print(json.dumps({
    "workers": workers,
    "scheduler": scheduler,
    "driver": {"hostname": socket.gethostname(), "marker": Path(marker).read_text(),
               "shared": sorted(os.listdir(shared))},
}))
"""

# Run on the driver host: a task on the cluster through whatever security the
# environment gives (DASK_DISTRIBUTED__COMM__TLS__...).
RUN_A_TASK = """
import json, sys
from distributed import Client

with Client(sys.argv[1], timeout=30, set_as_default=False) as client:
    result = client.submit(lambda x: x + 1, 41).result(timeout=30)
    workers = sorted(client.scheduler_info()["workers"])
print(json.dumps({"result": result, "workers": workers}))
"""

# Run on the driver host: how a connection to `address` ends, in 5 seconds.
TRY_TO_CONNECT = """
import sys
from distributed import Client

try:
    with Client(sys.argv[1], timeout=5, set_as_default=False) as client:
        client.submit(lambda x: x + 1, 41).result(timeout=5)
except Exception as error:
    print("refused:", type(error).__name__, str(error)[:300])
else:
    print("connected")
"""


def _root_links() -> set[str]:
    """Veths and bridges in the root namespace, by name."""
    found = set()
    for kind in ("veth", "bridge"):
        result = subprocess.run(
            ["ip", "-o", "link", "show", "type", kind],
            capture_output=True,
            text=True,
            check=True,
        )
        found |= {line.split(":")[1].strip() for line in result.stdout.splitlines()}
    return found


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _root_addresses() -> str:
    return subprocess.run(
        ["ip", "-o", "addr"], capture_output=True, text=True, check=True
    ).stdout


def test_hosts_have_their_own_addresses_and_disks_and_share_a_directory(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"  # the same path on every host, other files
    project.mkdir()
    (project / "marker.txt").write_text("the driver's disk")
    with SimulatedNetwork(tmp_path / "net") as net:
        shared = net.share()
        driver = net.add_host("driver", shared=[shared])
        scheduler_host = net.add_host("scheduler", aliases=["dask-scheduler"])
        worker_hosts = []
        for name in ("worker-1", "worker-2"):
            disk = tmp_path / f"{name}-disk"
            disk.mkdir()
            (disk / "marker.txt").write_text(f"the disk of {name}")
            hidden = {project: disk}
            worker_hosts.append(net.add_host(name, mounts=hidden, shared=[shared]))
        scheduler = net.start_scheduler(scheduler_host)
        for host in worker_hosts:
            net.start_worker(host, scheduler)
        workers = net.wait_for_workers(scheduler, 2)
        assert "198.18." not in _root_addresses()  # only inside the namespaces
        # a working directory inside a replaced one is the replacement
        entered = worker_hosts[0].run(["cat", "marker.txt"], cwd=project)
        seen = json.loads(
            driver.python(
                LOOK_AROUND,
                "tcp://dask-scheduler:8786",  # by name, from the hosts' /etc/hosts
                project / "marker.txt",
                shared.path,
            )
        )

    assert entered.stdout == "the disk of worker-1", entered
    assert scheduler.address == "tcp://198.18.0.2:8786"
    assert seen["scheduler"] == scheduler.address
    assert sorted(
        (address.rsplit(":", 1)[0], name) for address, name in workers.items()
    ) == [
        ("tcp://198.18.0.3", "worker-1"),
        ("tcp://198.18.0.4", "worker-2"),
    ]
    by_name = {
        info["name"]: (address, info) for address, info in seen["workers"].items()
    }
    for index, name in enumerate(["worker-1", "worker-2"], start=3):
        address, info = by_name[name]
        assert address.startswith(f"tcp://198.18.0.{index}:")
        assert info["hostname"] == name
        assert info["marker"] == f"the disk of {name}"
        assert (shared.backing / f"{name}.txt").read_text() == f"written on {name}"
        # not mounted in the pytest process's namespace: an empty mount point
        assert not (shared.path / f"{name}.txt").exists()
    assert seen["driver"] == {
        "hostname": "driver",
        "marker": "the driver's disk",
        "shared": ["worker-1.txt", "worker-2.txt"],
    }
    assert (project / "marker.txt").read_text() == "the driver's disk"


def test_tls_between_hosts_admits_the_cluster_and_refuses_strangers(
    tmp_path: Path,
) -> None:
    with SimulatedNetwork(tmp_path / "net") as net:
        driver = net.add_host("driver")
        scheduler_host = net.add_host("scheduler")
        worker_hosts = [net.add_host(f"worker-{n}") for n in (1, 2)]
        tls = net.tls_files()
        scheduler = net.start_scheduler(scheduler_host, tls=tls)
        for host in worker_hosts:
            net.start_worker(host, scheduler)
        net.wait_for_workers(scheduler, 2)
        secure = {**ENV, **scheduler.client_env()}
        ran = json.loads(driver.python(RUN_A_TASK, scheduler.address, env=secure))
        plain = driver.python(
            TRY_TO_CONNECT, scheduler.address.replace("tls://", "tcp://"), env=ENV
        )
        # trusts the scheduler, but shows a certificate of another CA
        foreign = network.make_tls_files(tmp_path / "other-ca")
        stranger = dask_tls_env({**foreign, "ca": tls["ca"]})
        other_ca = driver.python(
            TRY_TO_CONNECT, scheduler.address, env={**ENV, **stranger}
        )
        scheduler_log = scheduler.process.log.read_text()

    assert scheduler.address == "tls://198.18.0.2:8786"
    assert ran["result"] == 42
    assert [address.rsplit(":", 1)[0] for address in ran["workers"]] == [
        "tls://198.18.0.3",
        "tls://198.18.0.4",
    ]
    assert plain.startswith("refused: CommClosedError"), plain
    # With TLS 1.3 the client may finish its side of the handshake before the
    # scheduler rejects its certificate: it then sees the connection closed
    # (EOF) rather than a failed handshake. The scheduler's log says why.
    assert other_ca.startswith(
        ("refused: FatalCommClosedError", "refused: CommClosedError")
    ), other_ca
    handshakes = re.findall(
        r"TLS handshake failed with remote 'tls://198\.18\.0\.1:\d+': (.*)",
        scheduler_log,
    )
    assert len(handshakes) == 2, scheduler_log
    assert "WRONG_VERSION_NUMBER" in handshakes[0]  # plain TCP
    assert "CERTIFICATE_VERIFY_FAILED" in handshakes[1]  # the foreign certificate


def test_a_worker_started_later_joins_and_is_counted(tmp_path: Path) -> None:
    with SimulatedNetwork(tmp_path / "net") as net:
        scheduler = net.start_scheduler(net.add_host("scheduler"))
        net.start_worker(net.add_host("worker-1"), scheduler, resources={"slots": 1})
        first = net.wait_for_workers(scheduler, 1)
        late = net.start_worker(net.add_host("worker-2"), scheduler)
        both = net.wait_for_workers(scheduler, 2)
        assert late.process.alive()

    assert sorted(first.values()) == ["worker-1"]
    assert sorted(both.values()) == ["worker-1", "worker-2"]
    assert [a for a, name in both.items() if name == "worker-2"][0].startswith(
        "tcp://198.18.0.3:"
    )


def test_everything_is_removed_on_exit_even_when_the_test_body_raised(
    tmp_path: Path,
) -> None:
    links_before = _root_links()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the test body failed"):
        with SimulatedNetwork(tmp_path / "net", grace=2) as net:
            scheduler_host = net.add_host("scheduler")
            other = net.add_host("other", shared=[net.share()])
            made = list(net.namespaces)
            scheduler = net.start_scheduler(scheduler_host)
            net.start_worker(other, scheduler)
            # one that ignores SIGTERM, and one that left the process group
            deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
            other.start(
                [sys.executable, "-c", deaf + "; time.sleep(600)"], label="deaf"
            )
            other.start(["sh", "-c", "setsid sleep 600 & exec sleep 601"])
            net.wait_for_workers(scheduler, 1)
            started_pids = [pid for pids in net.pids().values() for pid in pids]
            groups = {process.pid for process in net.processes}
            escaped = [pid for pid in other.pids() if _group(pid) not in groups]
            assert set(namespaces()) >= set(made)
            assert _root_links() == links_before  # nothing made in the root
            raise RuntimeError("the test body failed")
    took = time.monotonic() - started

    assert len(made) == 3  # the switch and two hosts
    assert escaped  # the setsid sleep, outside every process group started
    assert len(started_pids) >= 6  # scheduler, nanny, worker, deaf, 2 sleeps
    assert not set(namespaces()) & set(made)
    assert not [name for name in namespaces() if name.startswith(net.token)]
    assert [pid for pid in started_pids if network.pid_alive(pid)] == []
    assert _root_links() == links_before
    assert took < 60


def test_namespaces_of_dead_runs_are_swept_and_live_ones_kept(
    tmp_path: Path,
) -> None:
    reason = network.unavailable()
    if reason:
        network.skip(reason)
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = f"{PREFIX}-{finished.pid}-abcdef-switch"  # a run killed before cleanup
    live = f"{PREFIX}-{os.getpid()}-abcdef-switch"  # a concurrent run of ours
    for name in (dead, live):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with SimulatedNetwork(tmp_path / "net"):
            left = namespaces()
    finally:
        for name in (dead, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    assert dead not in left
    assert live in left


def test_skips_with_the_reason_unless_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(network.os, "geteuid", lambda: 1000)
    monkeypatch.delenv(network.REQUIRED, raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        with SimulatedNetwork(tmp_path):
            pass
    assert str(skipped.value) == (
        "simulated hosts need root (network and mount namespaces); "
        "running as uid 1000"
    )
    monkeypatch.setenv(network.REQUIRED, "1")
    with pytest.raises(pytest.fail.Exception, match="running as uid 1000"):
        with SimulatedNetwork(tmp_path):
            pass
