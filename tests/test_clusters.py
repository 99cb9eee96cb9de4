"""Pointing the generated project at real clusters: a scheduler and workers started
with the `dask` CLI (plain and TLS), a cluster class the runner starts, and the
settings that must be refused. Every process listens on 127.0.0.1 only and is
stopped with a bounded wait (see `cli_cluster` and `run_command` in conftest)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    BIN,
    DASK_RUNNER,
    ENV,
    ENV_WITHOUT_PROJECT,
    PACKAGE,
    CliCluster,
    cli_cluster,
    data_files,
    example_nodes,
    kedro,
    make_tls_files,
    outputs_under_sequential_runner,
    ran_code_version,
    refusal,
    render,
    run_bounded,
    run_command,
    set_code_version,
)
from .faults import finish, started_kedro
from .shared import free_port, kill_group, tail, wait_for

RUN = ("run", f"--runner={DASK_RUNNER}")


# The address in the shipped conf/remote/parameters.yml, replaced by a real one.
REMOTE_PLACEHOLDER = "tcp://dask-scheduler:8786"


# --- helpers -----------------------------------------------------------------


def refused_promptly(project: Path, params: str, starting_with: str) -> str:
    """Runs `kedro run --params=...`, which must be refused (see ``refusal``)
    within 15 s, having written nothing; returns its error paragraph."""
    started = time.monotonic()
    result = kedro(*RUN, f"--params={params}", cwd=project, timeout=120)
    elapsed = time.monotonic() - started
    message = refusal(result, starting_with)
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert data_files(project) == {}
    return message


def executed_tasks(cluster: CliCluster) -> int:
    """How many tasks the cluster's workers have run so far."""
    with cluster.client() as client:
        counts = client.run(lambda dask_worker: dask_worker.state.executed_count)
    return sum(counts.values())


def task_counts_by_prefix(cluster: CliCluster) -> dict[str, int]:
    """How many tasks of each key prefix (a function's name) the scheduler has
    seen so far."""

    def counts(dask_scheduler) -> dict[str, int]:
        return {
            name: sum(prefix.state_counts.values())
            for name, prefix in dask_scheduler.task_prefixes.items()
        }

    with cluster.client() as client:
        return client.run_on_scheduler(counts)


def assert_cluster_intact_and_clean(
    cluster: CliCluster, worker_pids: dict[str, int]
) -> None:
    """The scheduler and its workers still run (the same worker processes), and the
    run left no tasks and no published datasets on the scheduler."""
    assert [process.poll() for process in cluster.processes] == [None] * len(
        cluster.processes
    )
    assert cluster.worker_pids() == worker_pids
    with cluster.client() as client:
        # The runner's client closes asynchronously: its tasks go soon after.
        def tasks() -> list[str]:
            return client.run_on_scheduler(
                lambda dask_scheduler: sorted(map(str, dask_scheduler.tasks))
            )

        wait_for(lambda: not tasks(), 10, "no task left", 0.2, lambda: str(tasks()))
        assert list(client.list_datasets()) == []


def processes_working_in(folder: Path) -> list[int]:
    """The processes (e.g. Dask workers) whose working directory is ``folder``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to inspect
            continue
    return found


def project_importable_on_workers(cluster: CliCluster) -> bool:
    with cluster.client() as client:
        found = client.run(
            lambda: importlib.util.find_spec(PACKAGE) is not None, nanny=False
        )
    return any(found.values())


def write_conf(project: Path, env: str, text: str) -> None:
    folder = project / "conf" / env
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "parameters.yml").write_text(text)


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sequential_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The example pipeline's outputs with Kedro's SequentialRunner: the reference."""
    return outputs_under_sequential_runner(tmp_path_factory.mktemp("sequential"))


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[CliCluster, dict[str, int]]]:
    """One `dask scheduler` and two `dask worker`s for the module, with the
    process id of each worker as it started."""
    with cli_cluster(tmp_path_factory.mktemp("cluster-logs")) as started:
        yield started, started.worker_pids()


@pytest.fixture
def workers_without_project(tmp_path: Path) -> Iterator[CliCluster]:
    """A cluster of its own whose workers cannot import the project: no PYTHONPATH
    and a working directory outside any project. Its own, because an upload of
    the project stays on the scheduler and workers for good."""
    with cluster_without_project(tmp_path) as started:
        assert not project_importable_on_workers(started)
        yield started


def cluster_without_project(
    tmp_path: Path, **options: Any
) -> AbstractContextManager[CliCluster]:
    """``cli_cluster`` whose workers run as on machines without the project, in
    the folder ``tmp_path / "elsewhere"``."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return cli_cluster(
        tmp_path / "logs",
        worker_env=ENV_WITHOUT_PROJECT,
        worker_cwd=elsewhere,
        **options,
    )


@pytest.fixture(scope="module")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[CliCluster, dict[str, str]]]:
    tls = make_tls_files(tmp_path_factory.mktemp("tls"))
    with cli_cluster(tmp_path_factory.mktemp("tls-logs"), tls=tls) as started:
        assert started.address.startswith("tls://127.0.0.1:")
        yield started, tls


# --- 1. a scheduler that is already running, four ways to name it -------------


def _through_conf(project: Path, address: str) -> tuple[list[str], dict]:
    remote = project / "conf" / "remote" / "parameters.yml"
    text = remote.read_text()
    assert REMOTE_PLACEHOLDER in text
    remote.write_text(text.replace(REMOTE_PLACEHOLDER, address))
    # The workers of this scheduler share this machine's disk: the project's
    # own data folder is the "shared storage" conf/remote points the data to.
    (project / "conf" / "remote" / "globals.yml").write_text("data_root: data\n")
    return ["--env=remote"], ENV


def _through_params(project: Path, address: str) -> tuple[list[str], dict]:
    return [f"--params=dask_client.address={address}"], ENV


def _through_runner_params(project: Path, address: str) -> tuple[list[str], dict]:
    return [f"--runner-params=address={address}"], ENV


def _through_environment_variable(
    project: Path, address: str
) -> tuple[list[str], dict]:
    base = (project / "conf" / "base" / "parameters.yml").read_text()
    assert "\n  address:" not in base  # only commented out
    return [], {**ENV, "DASK_SCHEDULER_ADDRESS": address}


@pytest.mark.parametrize(
    "point_at",
    [
        _through_conf,
        _through_params,
        _through_runner_params,
        _through_environment_variable,
    ],
    ids=["conf-remote", "params", "runner-params", "DASK_SCHEDULER_ADDRESS"],
)
def test_a_running_scheduler_runs_the_pipeline_and_stays_clean(
    point_at, cluster, sequential_outputs, tmp_path: Path
):
    running, worker_pids = cluster
    project = render(tmp_path)
    options, env = point_at(project, running.address)
    executed_before = executed_tasks(running)

    result = kedro(*RUN, *options, cwd=project, env=env)

    assert result.returncode == 0, result.output
    assert f"Connecting to the Dask scheduler at {running.address}" in result.output
    assert "Starting a Dask cluster" not in result.output
    assert "Completed 13 out of 13 nodes" in result.output
    assert "Traceback" not in result.output
    assert executed_tasks(running) - executed_before >= 13  # ran on these workers
    assert data_files(project) == sequential_outputs
    assert_cluster_intact_and_clean(running, worker_pids)


def test_dask_collections_of_async_nodes_are_computed_by_its_workers(
    cluster, sequential_outputs, tmp_path: Path
):
    """With ``--async`` Kedro saves ``simulated_flowers`` (a dask.ParquetDataset)
    in a thread of its own inside the node's task: the partitions it computes and
    writes must still be tasks of this scheduler, not of a local thread pool."""
    running, worker_pids = cluster
    project = render(tmp_path)
    before = task_counts_by_prefix(running)

    result = kedro(
        *RUN, "--async", f"--params=dask_client.address={running.address}", cwd=project
    )

    assert result.returncode == 0, result.output
    after = task_counts_by_prefix(running)
    for prefix in ("simulated_partition", "toparquetdata", "score_partition"):
        assert after.get(prefix, 0) > before.get(prefix, 0), (prefix, after)
    assert data_files(project) == sequential_outputs
    assert_cluster_intact_and_clean(running, worker_pids)


def test_what_a_node_prints_on_a_worker_reaches_the_drivers_console(
    cluster, tmp_path: Path
):
    """As in a sequential run, not in the worker's own log: on another machine
    the user would never see it. In order with the node's log records, and sent
    as the node ends even without a final newline."""
    running, worker_pids = cluster
    project = render(tmp_path)
    nodes = example_nodes(project)
    nodes.write_text(nodes.read_text() + PRINTING_SPLIT_DATA)
    address = f"--params=dask_client.address={running.address}"

    for runner in ("SequentialRunner", DASK_RUNNER):
        run = [str(BIN / "kedro"), "run", f"--runner={runner}", address]
        result = run_bounded(
            [*run, "--nodes=split_data"], project, 300, ENV, subprocess.PIPE
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert out.count("split_data printed 42\n") == 1, out
        assert out.count("split_data wrote lines\n") == 1, out
        assert out.index("split_data printed 42") < out.index("Split 150 rows"), out
        assert result.stderr.count("split_data wrote to stderr") == 1, result
    for log in running.logs.glob("worker-*.log"):
        assert "split_data printed" not in log.read_text()
        assert "split_data wrote lines" not in log.read_text()
    assert_cluster_intact_and_clean(running, worker_pids)


PRINTING_SPLIT_DATA = """
import sys as _sys

_split_data = split_data


def split_data(data, parameters):
    print("split_data printed", 42)
    _sys.stdout.writelines(["split_data wrote ", "lines\\n"])
    split = _split_data(data, parameters)
    print("split_data wrote to stderr", file=_sys.stderr, end="")
    return split
"""


# --- 2. workers that cannot import the project ---------------------------------


def test_workers_without_the_project_get_it_uploaded_by_default(
    workers_without_project, sequential_outputs, tmp_path: Path
):
    running = workers_without_project
    worker_pids = running.worker_pids()
    project = render(tmp_path / "project")

    for _ in range(2):
        result = kedro(
            *RUN, f"--params=dask_client.address={running.address}", cwd=project
        )
        assert result.returncode == 0, result.output

    assert f"Uploading the {PACKAGE} package to the Dask cluster" in result.output
    assert "Traceback" not in result.output
    assert data_files(project) == sequential_outputs
    assert_cluster_intact_and_clean(running, worker_pids)
    with running.client() as client:
        plugins = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.plugins)
        )
        worker_plugins = client.run(lambda dask_worker: list(dask_worker.plugins))
    # Named after the package's content: the second run of the same code
    # uploaded nothing new.
    assert len([name for name in plugins if name.startswith(f"{PACKAGE}-")]) == 1
    for names in worker_plugins.values():
        assert len([name for name in names if name.startswith(f"{PACKAGE}-")]) == 1


NEW_PIPELINE = """\
from kedro.pipeline import Pipeline, node


def shout(word: str) -> str:
    return word.upper()


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([node(shout, "params:word", "shouted", name="shout")])
"""


def test_changed_code_uploaded_again_is_what_the_cluster_runs(
    workers_without_project, tmp_path: Path
):
    """Dask reloads only an upload's top-level module: the scheduler and the
    workers must forget the project's modules of an earlier upload, or a new
    pipeline module cannot be found in them."""
    running = workers_without_project
    project = render(tmp_path / "project")
    address = f"--params=dask_client.address={running.address},word=hi"
    first = kedro(*RUN, "--nodes=split_data", address, cwd=project)
    assert first.returncode == 0, first.output
    new_pipeline = project / "src" / PACKAGE / "pipelines" / "shouting"
    new_pipeline.mkdir()
    (new_pipeline / "__init__.py").write_text(NEW_PIPELINE)
    second = kedro(*RUN, "--pipelines=shouting", address, cwd=project)
    assert second.returncode == 0, second.output
    assert "Completed 1 out of 1 nodes: shout" in second.output


def test_code_changed_back_is_what_the_cluster_runs(
    workers_without_project, tmp_path: Path
):
    """Uploads stay on the workers, named by content: after code A, then B, the
    workers hold both, B first. Running A again must run A, not B (it did: its
    upload was skipped as already there), though nothing new is uploaded."""
    running = workers_without_project
    project = render(tmp_path / "project")
    address = f"--params=dask_client.address={running.address}"
    ran = []
    for version in ("A", "B", "A"):
        set_code_version(project, version)
        result = kedro(*RUN, "--nodes=split_data", address, cwd=project)
        assert result.returncode == 0, result.output
        ran.append(ran_code_version(result.output))
    assert ran == [["A"], ["B"], ["A"]]


def test_a_run_without_upload_runs_the_installed_code_not_an_earlier_upload(
    tmp_path: Path,
):
    """An upload stays on the workers for good: a later run with `upload_project:
    false` must import their installed copy (here the project's src, edited), and
    one uploading again its upload."""
    project = render(tmp_path / "project")
    installed = {**ENV, "PYTHONPATH": str(project / "src")}
    ran = []
    with cli_cluster(
        tmp_path / "logs", n_workers=1, worker_env=installed, scheduler_env=installed
    ) as running:
        for version, upload in (("A", "true"), ("B", "false"), ("A", "true")):
            set_code_version(project, version)
            params = f"dask_client.address={running.address},"
            params += f"dask_client.upload_project={upload}"
            result = kedro(
                *RUN, "--nodes=split_data", f"--params={params}", cwd=project
            )
            assert result.returncode == 0, result.output
            ran.append(ran_code_version(result.output))
    assert ran == [["A"], ["B"], ["A"]]


@contextlib.contextmanager
def worker_joining(cluster: CliCluster, tmp_path: Path) -> Iterator[None]:
    """Once the run's tasks reach the scheduler, a `dask worker` without the project
    joins (in ``tmp_path / "elsewhere"``), killed on the way out."""
    with (tmp_path / "logs" / "late-worker.log").open("w") as log:
        wait_for(lambda: task_counts_by_prefix(cluster), 60, "the run's tasks")
        late = subprocess.Popen(
            [str(BIN / "dask"), "worker", cluster.address, "--host=127.0.0.1"]
            + ["--nthreads=1", "--no-dashboard"],
            env=ENV_WITHOUT_PROJECT,
            cwd=tmp_path / "elsewhere",
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield
        finally:
            kill_group(late)


def test_a_worker_joining_a_run_of_earlier_code_runs_that_code(tmp_path: Path):
    """A worker that joins gets every upload the cluster holds, in the order they
    came (A, then B), then the run's own choice: a run of A after B runs A on it."""
    project = render(tmp_path / "project")
    finished = []
    with cluster_without_project(tmp_path, n_workers=1) as running:
        address = f"--params=dask_client.address={running.address}"
        for version in ("A", "B", "A"):
            set_code_version(project, version)
            if len(finished) == 2:  # the worker that ran A and B goes
                kill_group(running.processes[1])
                wait_for(lambda: not running.workers(), 30, "the worker to go")
            run = threading.Thread(
                target=lambda: finished.append(
                    kedro(*RUN, "--nodes=split_data", address, cwd=project)
                )
            )
            run.start()
            if len(finished) == 2:
                with worker_joining(running, tmp_path):
                    run.join(timeout=150)
            run.join(timeout=150)
    for result in finished:
        assert result.returncode == 0, result.output
    ran = [ran_code_version(result.output) for result in finished]
    assert ran == [["A"], ["B"], ["A"]]


def test_a_run_of_other_code_waits_for_the_run_under_way(
    workers_without_project, tmp_path: Path
):
    """Workers import one build of the project at a time: a run uploading other
    code while another runs would switch that run's code under it. It is refused
    before it sends anything; the run under way finishes on its own code, and then
    the other code runs."""
    running = workers_without_project
    project = render(tmp_path / "project")
    release = tmp_path / "release"
    address = f"--params=dask_client.address={running.address}"

    @contextlib.contextmanager
    def started_waiting(log: Path) -> Iterator[subprocess.Popen]:
        """A run of code A whose node waits for ``release``; the code is B after."""
        set_code_version(project, "A", waits_for=release)
        with started_kedro(
            project, *RUN, "--nodes=split_data", address, log=log
        ) as started:
            wait_for(
                lambda: "Running node: split_data" in log.read_text(),
                120,
                f"the node of {log.stem} to start",
                details=lambda: tail(log),
            )
            set_code_version(project, "B")
            yield started

    with started_waiting(tmp_path / "a.log") as first:
        refused = kedro(*RUN, "--nodes=split_data", address, cwd=project)
        release.touch()
        first_exit = finish(first, 120, tmp_path / "a.log")
    second = kedro(*RUN, "--nodes=split_data", address, cwd=project)
    # A driver killed mid-run cannot withdraw its claim: its closed client voids it.
    release.unlink()
    with started_waiting(tmp_path / "killed.log") as killed:
        kill_group(killed)
    after_kill = kedro(*RUN, "--nodes=split_data", address, cwd=project)
    release.touch()  # ends the killed run's node, which its worker still runs

    message = refusal(refused, "Error: Another Kedro run is under way on this Dask")
    assert f"with other code of {PACKAGE} ({PACKAGE}-" in message
    assert ran_code_version(refused.output) == []
    assert first_exit == 0, tail(tmp_path / "a.log")
    assert ran_code_version((tmp_path / "a.log").read_text()) == ["A"]
    assert second.returncode == 0, second.output
    assert ran_code_version(second.output) == ["B"]
    assert after_kill.returncode == 0, after_kill.output
    assert ran_code_version(after_kill.output) == ["B"]


def test_workers_without_the_project_and_no_upload_fail_clearly(
    workers_without_project, tmp_path: Path
):
    """Even after a run uploaded the project: its upload is not theirs to import."""
    running = workers_without_project
    worker_pids = running.worker_pids()
    project = render(tmp_path / "project")
    address = f"--params=dask_client.address={running.address}"
    uploaded = kedro(*RUN, "--nodes=split_data", address, cwd=project)
    assert uploaded.returncode == 0, uploaded.output

    result = kedro(
        *RUN,
        f"--params=dask_client.address={running.address},"
        "dask_client.upload_project=false",
        cwd=project,
    )

    # The workers are asked before any node is sent (distributed would close
    # each worker given a task it cannot unpickle).
    message = refusal(result, "Error: The Dask workers tcp://127.0.0.1:")
    assert f"(ModuleNotFoundError: No module named '{PACKAGE}')" in message
    assert "upload_project: true" in message
    assert not (project / "data/08_reporting/model_comparison.csv").exists()
    assert_cluster_intact_and_clean(running, worker_pids)


def test_workers_that_cannot_import_the_nodes_are_refused_and_kept(tmp_path: Path):
    """distributed closes a worker that cannot unpickle a task (its log says
    ModuleNotFoundError), so every worker given a node of this run would go and the
    run would wait for workers: the runner asks the workers first, and says what
    they miss. Here the scheduler can import the project and the workers cannot."""
    project = render(tmp_path / "project")
    scheduler_env = {**ENV, "PYTHONPATH": str(project / "src")}
    with cluster_without_project(tmp_path, scheduler_env=scheduler_env) as running:
        worker_pids = running.worker_pids()
        message = refused_promptly(
            project,
            f"dask_client.address={running.address},dask_client.upload_project=false,"
            "dask_client.no_worker_timeout=60",
            "Error: The Dask workers tcp://127.0.0.1:",
        )
        assert (
            f"cannot import what the run's nodes, datasets and plugins need: {PACKAGE}."
            in message
        )
        assert "upload_project: true" in message
        assert_cluster_intact_and_clean(running, worker_pids)


#: A module of the project's own beside its package, as a company's plugin
#: installed where `kedro run` runs but not on the cluster would be.
COMPANY_PLUGIN = '''\
"""Records nothing: only its being registered matters here."""

from kedro.framework.hooks import hook_impl


class Tracking:
    @hook_impl
    def after_node_run(self, node):
        pass
'''


def test_workers_that_cannot_import_a_plugin_are_refused_and_kept(tmp_path: Path):
    """Workers unpickle the plugins that have node hooks: one they cannot import is
    named before any node runs, instead of failing every node. The project package
    is uploaded, as by default; the plugin is not part of it."""
    project = render(tmp_path / "project")
    (project / "src" / "company_tracking.py").write_text(COMPANY_PLUGIN)
    settings = project / "src" / PACKAGE / "settings.py"
    settings.write_text(
        settings.read_text()
        + "\nfrom company_tracking import Tracking\n\nHOOKS = (Tracking(),)\n"
    )
    with cluster_without_project(tmp_path) as running:
        worker_pids = running.worker_pids()
        message = refused_promptly(
            project,
            f"dask_client.address={running.address}",
            "Error: The Dask workers tcp://127.0.0.1:",
        )
        assert "plugins need: company_tracking (ModuleNotFoundError" in message
        assert_cluster_intact_and_clean(running, worker_pids)


def test_a_late_worker_that_cannot_import_the_nodes_is_named_when_it_dies(
    tmp_path: Path,
):
    """The up-front check asks the workers connected when the run starts. One that
    joins later without the project dies on its first task (distributed closes
    it): the run stops at no_worker_timeout, naming the node and why."""
    project = render(tmp_path / "project")
    scheduler_env = {**ENV, "PYTHONPATH": str(project / "src")}
    params = (
        "--params=dask_client.upload_project=false,dask_client.no_worker_timeout=10"
    )
    finished = []
    with cluster_without_project(
        tmp_path, n_workers=0, scheduler_env=scheduler_env
    ) as running:
        run = threading.Thread(
            target=lambda: finished.append(
                kedro(
                    *RUN,
                    f"{params},dask_client.address={running.address}",
                    cwd=project,
                    timeout=120,
                )
            )
        )
        run.start()
        with worker_joining(running, tmp_path):
            run.join(timeout=150)
    assert finished, "kedro run did not finish"
    message = refusal(finished[0], "Error: Dask workers died running Kedro node '")
    assert "'split_data'" in message
    assert "cannot import what a node needs" in message
    assert data_files(project) == {}


def test_a_scheduler_that_cannot_import_the_project_is_named(tmp_path: Path):
    """The scheduler unpickles the task graph, which names the project's code: one
    without the project (workers with it) fails the run before any node runs, with
    what to do, not a traceback from deep inside Dask."""
    project = render(tmp_path / "project")
    worker_env = {**ENV, "PYTHONPATH": str(project / "src")}
    with cli_cluster(
        tmp_path / "logs", worker_env=worker_env, scheduler_env=ENV_WITHOUT_PROJECT
    ) as running:
        worker_pids = running.worker_pids()
        message = refused_promptly(
            project,
            f"dask_client.address={running.address},dask_client.upload_project=false",
            f"Error: The Dask scheduler cannot import the project package '{PACKAGE}' "
            f"(No module named '{PACKAGE}')",
        )
        assert "upload_project: true" in message
        assert_cluster_intact_and_clean(running, worker_pids)


def another_python() -> Path | None:
    """An installed interpreter of another Python minor version than this one."""
    minors = [minor for minor in (12, 13, 10) if minor != sys.version_info.minor]
    for minor in minors:
        found = sorted(Path.home().glob(f".pyenv/versions/3.{minor}.*/bin/python"))
        if found or (found := [shutil.which(f"python3.{minor}")]) != [None]:
            return Path(found[-1])
    return None


@pytest.fixture(scope="module")
def cluster_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment on another Python with this one's distributed, as a
    cluster image built on another Python has."""
    interpreter = another_python()
    if interpreter is None:
        pytest.skip("no Python of another minor version is installed here")
    venv = tmp_path_factory.mktemp("cluster-python") / "venv"
    made = run_command([str(interpreter), "-m", "venv", str(venv)], venv.parent)
    assert made.returncode == 0, made.output
    python = venv / "bin" / "python"
    distributed_here = f"distributed=={importlib.metadata.version('distributed')}"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-input"]
    installed = run_command([*pip, distributed_here], venv.parent)
    assert installed.returncode == 0, installed.output
    return python


def test_a_cluster_on_another_python_is_refused_before_anything_is_sent(
    cluster_python: Path, tmp_path: Path
):
    """Dask only warns of a scheduler and workers on another Python; the runner's
    plugins, sent as bytecode, crashed such workers (signal 11) and the run ended
    in a CommClosedError traceback. It is refused, naming the versions, and the
    cluster is left as it was."""
    project = render(tmp_path / "project")
    with cluster_without_project(tmp_path, python=cluster_python) as running:
        worker_pids = running.worker_pids()
        other = run_command(
            [
                str(cluster_python),
                "-c",
                "import platform; print(platform.python_version())",
            ],
            tmp_path,
        ).output.strip()
        message = refused_promptly(
            project,
            f"dask_client.address={running.address}",
            "Error: The Dask cluster runs another Python than this machine's "
            f"{sys.version_info.major}.{sys.version_info.minor}: the scheduler "
            f"(Python {other}), tcp://127.0.0.1:",
        )
        assert message.count(f"(Python {other})") == 3, message
        assert [process.poll() for process in running.processes] == [None] * 3
        assert running.worker_pids() == worker_pids  # none crashed and restarted


# --- 3. TLS --------------------------------------------------------------------


def test_a_tls_scheduler_runs_the_pipeline_with_the_security_settings(
    tls_cluster, sequential_outputs, tmp_path: Path
):
    running, tls = tls_cluster
    worker_pids = running.worker_pids()
    project = render(tmp_path)
    write_conf(
        project,
        "tls",
        f"""\
dask_client:
  address: {running.address}
  timeout: 30
  security:
    tls_ca_file: {tls["ca"]}
    tls_client_cert: {tls["cert"]}
    tls_client_key: {tls["key"]}
""",
    )

    executed_before = executed_tasks(running)

    result = kedro(*RUN, "--env=tls", cwd=project)

    assert result.returncode == 0, result.output
    assert f"Connecting to the Dask scheduler at {running.address}" in result.output
    assert "Dask dashboard: http" in result.output
    assert "Traceback" not in result.output
    assert executed_tasks(running) - executed_before >= 13
    assert data_files(project) == sequential_outputs
    assert_cluster_intact_and_clean(running, worker_pids)


def test_a_tls_scheduler_refuses_a_run_without_the_security_settings(
    tls_cluster, tmp_path: Path
):
    running, _ = tls_cluster
    worker_pids = running.worker_pids()
    project = render(tmp_path)

    message = refused_promptly(
        project,
        f"dask_client.address={running.address},dask_client.timeout=5",
        f"Error: Could not connect to the Dask scheduler at {running.address}",
    )

    assert "dask_client.security" in message
    assert_cluster_intact_and_clean(running, worker_pids)


# --- 4. a cluster class the runner starts, with adaptive scaling -----------------


def test_a_local_cluster_class_with_kwargs_and_adapt(
    sequential_outputs, tmp_path: Path
):
    project = render(tmp_path)
    write_conf(
        project,
        "adaptive",
        """\
dask_client:
  cluster_class: distributed.LocalCluster
  cluster_kwargs:
    n_workers: 1
    processes: true
    threads_per_worker: 2
    dashboard_address: "127.0.0.1:0"
  adapt:
    minimum: 1
    maximum: 2
""",
    )

    result = kedro(*RUN, "--env=adaptive", cwd=project)

    assert result.returncode == 0, result.output
    assert (
        "Starting a Dask cluster: distributed.deploy.local.LocalCluster(n_workers=1, "
        "processes=True, threads_per_worker=2, dashboard_address='127.0.0.1:0')"
    ) in result.output
    assert "Completed 13 out of 13 nodes" in result.output
    assert "Traceback" not in result.output
    assert data_files(project) == sequential_outputs
    if Path("/proc/self/cwd").exists():  # the runner closed the cluster it started
        wait_for(
            lambda: not processes_working_in(project.resolve()),
            10,
            "the cluster's processes to exit",
            0.2,
            lambda: str(processes_working_in(project.resolve())),
        )


# --- 5. settings that must be refused --------------------------------------------


def test_a_misspelt_key_is_named_with_the_valid_keys(tmp_path: Path):
    project = render(tmp_path)

    result = kedro(*RUN, "--params=dask_client.n_wokers=2", cwd=project)

    message = refusal(
        result,
        "Error: Unknown key(s) in dask_client: n_wokers (did you mean n_workers?).",
    )
    for valid in ("address", "cluster_class", "upload_project", "n_workers"):
        assert valid in message.split("?).", 1)[1]


def test_an_unreachable_address_fails_within_its_timeout(tmp_path: Path):
    project = render(tmp_path)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there

    refused_promptly(
        project,
        f"dask_client.address={address},dask_client.timeout=2",
        f"Error: Could not connect to the Dask scheduler at {address} within 2 s",
    )


def test_an_address_that_is_no_scheduler_fails_within_its_timeout(tmp_path: Path):
    """A port that accepts connections but never answers as a scheduler does (a
    dashboard's port, given for the scheduler's)."""
    project = render(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        refused_promptly(
            project,
            f"dask_client.address={address},dask_client.timeout=2",
            f"Error: Could not connect to the Dask scheduler at {address} within 2 s",
        )


def test_a_scheduler_without_workers_fails_after_no_worker_timeout(tmp_path: Path):
    """Not the advice for a cluster the runner starts (cluster_kwargs, squeue):
    this scheduler was running already, and needs workers of its own."""
    project = render(tmp_path / "project")
    with cli_cluster(tmp_path / "logs", n_workers=0) as running:
        started = time.monotonic()
        result = kedro(
            *RUN,
            f"--params=dask_client.address={running.address},"
            "dask_client.no_worker_timeout=3",
            cwd=project,
            timeout=120,
        )
        message = refusal(result, "Error: No Dask worker was connected for ")
        waited = int(message.split(" for ", 1)[1].split(" s ", 1)[0])
        assert 3 <= waited <= 5, message  # checked about once a second
        assert time.monotonic() - started < 30
        assert f"Start workers for the scheduler at {running.address}" in message
        assert "cluster_kwargs" not in message
        assert data_files(project) == {}


def test_an_unimportable_cluster_class_says_what_to_install(tmp_path: Path):
    if importlib.util.find_spec("dask_jobqueue") is not None:
        pytest.skip("dask_jobqueue is installed here")
    project = render(tmp_path)

    result = kedro(
        *RUN,
        "--params=dask_client.cluster_class=dask_jobqueue.SLURMCluster",
        cwd=project,
    )

    message = refusal(
        result,
        "Error: dask_client.cluster_class 'dask_jobqueue.SLURMCluster' cannot be "
        "imported",
    )
    assert "`pip install dask-jobqueue`" in message


# --- 6. the performance report -----------------------------------------------------


def test_a_performance_report_is_written(cluster, sequential_outputs, tmp_path: Path):
    running, worker_pids = cluster
    project = render(tmp_path)
    report = "data/08_reporting/dask-report.html"

    result = kedro(
        *RUN,
        f"--params=dask_client.address={running.address},"
        f"dask_client.performance_report={report}",
        cwd=project,
    )

    assert result.returncode == 0, result.output
    assert f"Wrote the Dask performance report to {report}" in result.output
    outputs = data_files(project)
    html = outputs.pop("08_reporting/dask-report.html")
    assert len(html) > 1000
    assert b"<html" in html[:2000].lower()
    assert outputs == sequential_outputs
    assert_cluster_intact_and_clean(running, worker_pids)
