"""Kedro plugins under DaskRunner give what they give under SequentialRunner.

One project for the module, set up as a kedro-mlflow user would (`kedro mlflow
init`, the tracking URI in mlflow.yml, the example's models and chart wrapped
in ``MlflowArtifactDataset``, two ``MlflowMetricDataset`` per model branch),
with kedro-viz installed (its hooks load from entry points) and a plugin of the
tests' own in ``settings.HOOKS``. Each kedro run logs to an MLflow experiment of
its own; SequentialRunner's records are the reference.

Plugins keep state in their hook instances across hook specs and set
process-wide state (MLflow's tracking URI and active run): under DaskRunner the
node and dataset hooks fire on worker processes, which must see that state as
the driver left it after the run-level hooks, and what they record must reach
the driver before ``after_pipeline_run``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ..conftest import (
    BIN,
    DASK_RUNNER,
    ENV,
    PACKAGE,
    cli_cluster,
    kedro,
    render,
    run_command,
)
from ..faults import finish, started_kedro
from ..shared import tail, wait_for
from . import records
from .mlflow_server import MlflowServer, server  # noqa: F401  (a fixture)

FILES = Path(__file__).parent / "project_files"

#: DaskRunner on a LocalCluster of worker processes; its dashboard on any free
#: port (another test's cluster may hold 8787: Dask would warn). Given with
#: --runner-params, which kedro-mlflow does not record (--params it does).
LOCAL_CLUSTER = [
    f"--runner={DASK_RUNNER}",
    "--runner-params=n_workers=2,threads_per_worker=1,processes=true,"
    "dashboard_address=127.0.0.1:0",
]
SEQUENTIAL: list[str] = []

#: The example's 13 nodes, those of plugin_tracked (one per model, and one
#: that logs with MLflow's API) and the checkpoint of plugin_checks.
DEFAULT_NODES = 13 + 5 + 1
MODELS = (
    "logistic_regression",
    "support_vector_machine",
    "random_forest",
    "gradient_boosting",
)
#: What kedro-mlflow logs in a complete run of the default pipeline.
ARTIFACTS = sorted([f"{model}.pickle" for model in MODELS] + ["model_comparison.png"])
METRICS = sorted(
    [f"{model}.{key}_accuracy" for model in MODELS for key in ("cv", "test")]
    + ["logged_in_a_node"]
)

#: kedro-viz's run hook warns once per run for any runner but SequentialRunner
#: (it records workflow events under SequentialRunner only): by design.
RUNNER_ONLY_WARNINGS = ("Workflow tracking is disabled for non-sequential runners",)
STATS_WARNING = "Unable to create statistics"
IMPORT_WARNING = "plugin-tests: the project's hooks module was imported"

_experiments = itertools.count(1)


# --- the project ----------------------------------------------------------------


def _kedro_env() -> dict[str, str]:
    """The tests' environment without any MLflow setting of the caller's."""
    return {key: value for key, value in ENV.items() if not key.startswith("MLFLOW_")}


def plugin_project(folder: Path) -> Path:
    """A rendered project with kedro-mlflow initialised and its datasets
    tracked, the tests' pipelines and the tests' own hooks."""
    project = render(folder)
    parameters = yaml.safe_load((project / "conf/base/parameters.yml").read_text())
    models = {name for name, block in parameters.items() if "model_options" in block}
    assert models == set(MODELS), f"the example's models are now {sorted(models)}"
    initialised = kedro("mlflow", "init", cwd=project, env=_kedro_env(), timeout=120)
    assert initialised.returncode == 0, initialised.output
    assert (project / "conf/local/mlflow.yml").is_file(), initialised.output

    package = project / "src" / PACKAGE
    shutil.copy(FILES / "hooks.py", package / "plugin_hooks.py")
    with (package / "settings.py").open("a") as settings:
        settings.write(
            f"\nfrom {PACKAGE}.plugin_hooks import RecordingHooks  # noqa: E402\n\n"
            "HOOKS = (RecordingHooks(),)\n"
        )
    for name, source in (
        ("plugin_tracked", "tracked.py"),
        ("plugin_checks", "checks.py"),
    ):
        (package / "pipelines" / name).mkdir()
        shutil.copy(FILES / source, package / "pipelines" / name / "__init__.py")
    (project / "conf/base/parameters_plugin_checks.yml").write_text(
        yaml.safe_dump(
            {"plugin_checks": {"marker": "", "sleep_seconds": 0, "fail": False}}
        )
    )

    # The example's models and chart become MLflow artifacts (the files are
    # still written where they were), its metrics MLflow metrics.
    catalog_file = project / "conf/base/catalog.yml"
    catalog = yaml.safe_load(catalog_file.read_text())
    for name in ("{model}_model", "model_comparison_plot"):
        catalog[name] = {
            "type": "kedro_mlflow.io.artifacts.MlflowArtifactDataset",
            "dataset": catalog[name],
        }
    catalog_file.write_text(yaml.safe_dump(catalog, sort_keys=False))
    metrics = {
        name: {"type": "kedro_mlflow.io.metrics.MlflowMetricDataset"}
        for name in METRICS
    }
    (project / "conf/base/catalog_mlflow.yml").write_text(yaml.safe_dump(metrics))
    return project


def point_mlflow_at(
    project: Path,
    tracking_uri: str,
    experiment: str,
    artifact_location: str | None = None,
    nested: bool = True,
) -> None:
    """Sets mlflow.yml's tracking URI and experiment (and where a new
    experiment keeps its artifacts, and whether runs nest), as a user edits it."""
    path = project / "conf/local/mlflow.yml"
    config = yaml.safe_load(path.read_text())
    config["tracking"]["run"]["nested"] = nested
    config["server"]["mlflow_tracking_uri"] = tracking_uri
    config["tracking"]["experiment"]["name"] = experiment
    create = config["tracking"]["experiment"]["create_experiment_kwargs"]
    create["artifact_location"] = artifact_location
    path.write_text(yaml.safe_dump(config, sort_keys=False))


# --- one kedro run, and what it left ----------------------------------------------


@dataclass(repr=False)
class Run:
    runner: str
    experiment: str
    returncode: int
    output: str
    #: ``records.experiment_records`` of the run's experiment.
    records: dict
    #: Runs that appeared or changed status in other experiments of the store.
    elsewhere: dict = field(default_factory=dict)
    #: MLflow stores made by default in the project or the workers' folder.
    stray: dict = field(default_factory=dict)
    #: kedro-viz's .viz/stats.json, and the tests' hooks' summary.
    viz_stats: dict | None = None
    summary: dict | None = None
    seconds: float = 0.0

    def __repr__(self) -> str:
        return f"<{self.runner} run, exit {self.returncode}, {self.experiment}>"

    @property
    def evidence(self) -> str:
        return (
            f"{self.runner} run (exit {self.returncode}, {self.seconds:.1f} s), "
            f"experiment {self.experiment}; other experiments changed: "
            f"{self.elsewhere}; stray stores: {self.stray}\n"
            f"--- output tail ---\n{self.output[-3000:]}"
        )


def _changes(before: dict, after: dict, own: str) -> dict:
    return {
        name: {"before": before.get(name, {}), "after": counts}
        for name, counts in after.items()
        if name != own and counts != before.get(name, {})
    }


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _clear_outputs(project: Path) -> None:
    for leftover in (
        project / ".viz" / "stats.json",
        project / ".plugin_tests" / "summary.json",
    ):
        leftover.unlink(missing_ok=True)


def _stray(folders: list[Path], before: list[str]) -> dict:
    return {
        path: records.store_contents(Path(path))
        for path in records.stray_stores(*folders)
        if path not in before
    }


class Tracked:
    """kedro runs of one project logging to one tracking URI."""

    def __init__(self, project: Path, tracking_uri: str, **mlflow: str) -> None:
        self.project = project
        self.tracking_uri = tracking_uri
        self.mlflow = mlflow  # more mlflow.yml settings (artifact_location)

    def prepare(self, label: str) -> str:
        experiment = f"{label}-{next(_experiments)}"
        point_mlflow_at(self.project, self.tracking_uri, experiment, **self.mlflow)
        _clear_outputs(self.project)
        return experiment

    def collect(
        self,
        runner: str,
        experiment: str,
        returncode: int,
        output: str,
        before: dict,
        stray_before: list[str],
        folders: list[Path],
        seconds: float,
    ) -> Run:
        return Run(
            runner=runner,
            experiment=experiment,
            returncode=returncode,
            output=output,
            records=records.experiment_records(self.tracking_uri, experiment),
            elsewhere=_changes(
                before, records.runs_by_experiment(self.tracking_uri), experiment
            ),
            stray=_stray(folders, stray_before),
            viz_stats=_read_json(self.project / ".viz" / "stats.json"),
            summary=_read_json(self.project / ".plugin_tests" / "summary.json"),
            seconds=seconds,
        )

    def run(
        self,
        label: str,
        runner_args: list[str],
        *args: str,
        worker_folders: tuple[Path, ...] = (),
    ) -> Run:
        """`kedro run <runner_args> <args>` to completion, bounded."""
        experiment = self.prepare(label)
        folders = [self.project, *worker_folders]
        before = records.runs_by_experiment(self.tracking_uri)
        stray_before = records.stray_stores(*folders)
        started = time.monotonic()
        finished = kedro(
            "run", *runner_args, *args, cwd=self.project, env=_kedro_env(), timeout=240
        )
        return self.collect(
            label,
            experiment,
            finished.returncode,
            finished.output,
            before,
            stray_before,
            folders,
            time.monotonic() - started,
        )


def assert_complete(run: Run) -> None:
    """The reference run is what kedro-mlflow logs for the default pipeline."""
    assert run.returncode == 0, run.evidence
    assert run.records["runs"] == 1, run.records
    [record] = run.records["records"]
    assert record["status"] == "FINISHED", record
    assert record["artifacts"] == ARTIFACTS, record
    assert sorted(record["metrics"]) == METRICS, record
    assert record["tags"].get("tagged_in_a_node") == "yes", record
    assert "split_options" in record["params"], record
    assert "logistic_regression.model_options" in record["params"], record


def assert_same(dask: object, sequential: object, what: str, run: Run) -> None:
    """``dask == sequential``, or a message naming each difference."""
    assert dask == sequential, (
        f"{what} differ from SequentialRunner's:\n"
        f"{records.differences(dask, sequential)}\n{run.evidence}"
    )


def assert_same_records(dask: Run, sequential: Run) -> None:
    """The run's MLflow records are Sequential's, and no run went elsewhere."""
    # Stray runs elsewhere and stray stores first: they say where the missing
    # records of the run went.
    assert dask.elsewhere == sequential.elsewhere == {}, dask.evidence
    assert dask.stray == sequential.stray == {}, dask.evidence
    assert_same(dask.records, sequential.records, "MLflow records", dask)


def assert_same_complete_records(dask: Run, sequential: Run) -> None:
    assert dask.returncode == 0, dask.evidence
    assert_same_records(dask, sequential)


# --- fixtures: one project, one server, one reference run ------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return plugin_project(tmp_path_factory.mktemp("plugins"))


@pytest.fixture(scope="module")
def tracked(project: Path, server: MlflowServer) -> Tracked:  # noqa: F811
    return Tracked(project, server.url)


@pytest.fixture(scope="module")
def sequential(tracked: Tracked) -> Run:
    """SequentialRunner on the default pipeline: the reference."""
    run = tracked.run("sequential", SEQUENTIAL)
    assert_complete(run)
    return run


@pytest.fixture(scope="module")
def dask_local(tracked: Tracked, sequential: Run) -> Run:
    """DaskRunner on a LocalCluster of two worker processes."""
    run = tracked.run("dask-local", LOCAL_CLUSTER)
    started = re.search(r"Starting a Dask cluster: \S*LocalCluster\(.*", run.output)
    assert started and "processes=True" in started.group(), run.evidence
    return run


def _worker_env() -> dict[str, str]:
    """The workers' own environment: nothing of MLflow's."""
    return _kedro_env()


# --- kedro-mlflow ------------------------------------------------------------------


def test_mlflow_local_cluster_logs_one_complete_run(
    dask_local: Run, sequential: Run
) -> None:
    """DaskRunner on a LocalCluster of worker processes: exactly one run per
    kedro run, FINISHED, with Sequential's params, metrics, artifacts and tags;
    no run elsewhere on the server, no store made by default."""
    assert_same_complete_records(dask_local, sequential)


def _on_cli_cluster(
    tracked: Tracked, folder: Path, *labels: str
) -> tuple[str, list[Run]]:
    """A kedro run for each label, one after another, on one `dask scheduler`
    and `dask worker`s started from another folder with none of MLflow's
    environment; returns the scheduler's address and the runs."""
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    with cli_cluster(
        folder / "logs", worker_env=_worker_env(), worker_cwd=elsewhere
    ) as cluster:
        options = [
            f"--runner={DASK_RUNNER}",
            f"--runner-params=address={cluster.address}",
        ]
        runs = [
            tracked.run(label, options, worker_folders=(elsewhere,)) for label in labels
        ]
    return cluster.address, runs


def assert_same_after_exit(tracked: Tracked, run: Run, sequential: Run) -> None:
    """Sequential's records, read again after the workers exited (MLflow ends a
    process's active run at exit)."""
    after_exit = records.experiment_records(tracked.tracking_uri, run.experiment)
    assert_same(
        after_exit, sequential.records, "after the workers exited, records", run
    )


def test_mlflow_cli_cluster_with_workers_elsewhere(
    tracked: Tracked, sequential: Run, tmp_path: Path
) -> None:
    """DaskRunner on a `dask scheduler` and `dask worker`s started from another
    folder, with none of MLflow's environment: the same one complete run, also
    after the workers exit."""
    address, [run] = _on_cli_cluster(tracked, tmp_path, "dask-cli")
    assert f"Connecting to the Dask scheduler at {address}" in run.output
    assert_same_complete_records(run, sequential)
    assert_same_after_exit(tracked, run, sequential)


def test_mlflow_two_dask_runs_in_a_row_on_one_scheduler(
    tracked: Tracked, sequential: Run, tmp_path: Path
) -> None:
    """Two kedro runs on one long-lived CLI cluster: two complete runs, each
    equal to Sequential's; the second logs nothing into the first's run. With
    `nested: false` in mlflow.yml, kedro-mlflow's start_run fails in a worker
    thread where an earlier run's MLflow run is still active (the runner drops
    it after each node: worker_hooks.mlflow_runs_left_open)."""
    strict = Tracked(
        tracked.project, tracked.tracking_uri, **tracked.mlflow, nested=False
    )
    _, runs = _on_cli_cluster(strict, tmp_path, "dask-cli-first", "dask-cli-second")
    for run in runs:
        assert_same_complete_records(run, sequential)
        assert_same_after_exit(tracked, run, sequential)


def test_mlflow_failing_node_fails_the_one_run(tracked: Tracked) -> None:
    """A node that raises: under both runners the kedro run fails and its one
    MLflow run is FAILED with the same records; no other run exists, nothing is
    left RUNNING."""
    args = ["--pipeline=plugin_checks", "--params=plugin_checks.fail=true"]
    sequential = tracked.run("failing-sequential", SEQUENTIAL, *args)
    dask = tracked.run("failing-dask", LOCAL_CLUSTER, *args)
    for run in (sequential, dask):
        assert run.returncode != 0, run.evidence
        assert "PlannedFailure" in run.output, run.evidence
    assert sequential.records["runs"] == 1, sequential.records
    assert sequential.records["records"][0]["status"] == "FAILED", sequential.records
    assert_same_records(dask, sequential)
    assert_same(dask.summary, sequential.summary, "the own hooks' summaries", dask)
    assert records.running_runs(tracked.tracking_uri).get(dask.experiment) is None


def test_mlflow_sqlite_tracking_uri_on_a_local_cluster(
    project: Path, tmp_path: Path
) -> None:
    """kedro-mlflow with a sqlite tracking URI and no server: every process
    writes the same database file. DaskRunner on a LocalCluster of worker
    processes logs what SequentialRunner logs."""
    store = tmp_path / "store"
    store.mkdir()
    sqlite = Tracked(
        project,
        f"sqlite:///{store / 'mlflow.db'}",
        artifact_location=(store / "artifacts").as_uri(),
    )
    sequential = sqlite.run("sqlite-sequential", SEQUENTIAL)
    assert_complete(sequential)
    dask = sqlite.run("sqlite-dask", LOCAL_CLUSTER)
    assert_same_complete_records(dask, sequential)


def _interrupted(
    tracked: Tracked, label: str, runner_args: list[str], folder: Path
) -> tuple[Run, bool]:
    """`kedro run` of the checkpoint node (sleeping 60 s), Ctrl-C to its process
    group as a terminal sends it once the node runs; what it left, and whether
    the node ran in the kedro process itself."""
    marker = folder / "checkpoint-started"
    marker.unlink(missing_ok=True)
    experiment = tracked.prepare(label)
    before = records.runs_by_experiment(tracked.tracking_uri)
    stray_before = records.stray_stores(tracked.project)
    log = folder / f"{label}.log"
    started = time.monotonic()
    with started_kedro(
        tracked.project,
        "run",
        *runner_args,
        "--pipeline=plugin_checks",
        f"--params=plugin_checks.sleep_seconds=60,plugin_checks.marker={marker}",
        log=log,
        env=_kedro_env(),
    ) as process:
        wait_for(
            lambda: marker.exists() or process.poll() is not None,
            120,
            "the checkpoint node to start",
        )
        if process.poll() is not None:
            pytest.fail(f"{label}: the run ended before Ctrl-C:\n{tail(log)}")
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)
        returncode = finish(process, 60, log)
    in_kedro_process = int(marker.read_text()) == process.pid
    run = tracked.collect(
        label,
        experiment,
        returncode,
        log.read_text(errors="replace"),
        before,
        stray_before,
        [tracked.project],
        time.monotonic() - started,
    )
    return run, in_kedro_process


def test_mlflow_ctrl_c_leaves_no_run_running(tracked: Tracked, tmp_path: Path) -> None:
    """Ctrl-C while a node runs: the run ends as SequentialRunner's does, and
    no MLflow run is left RUNNING anywhere."""
    sequential, in_kedro = _interrupted(
        tracked, "ctrl-c-sequential", SEQUENTIAL, tmp_path
    )
    assert in_kedro
    dask, in_kedro = _interrupted(tracked, "ctrl-c-dask", LOCAL_CLUSTER, tmp_path)
    assert not in_kedro, "the node ran in the kedro process, not on a Dask worker"
    print(
        f"\n[Ctrl-C] SequentialRunner: exit {sequential.returncode}, "
        f"{[r['status'] for r in sequential.records['records']]}; DaskRunner: "
        f"exit {dask.returncode}, {[r['status'] for r in dask.records['records']]}"
    )
    for run in (sequential, dask):
        assert run.returncode != 0, run.evidence
    assert (
        records.running_runs(tracked.tracking_uri).get(dask.experiment) is None
    ), dask.evidence
    assert_same_records(dask, sequential)


# --- kedro-viz -----------------------------------------------------------------------


def test_viz_dataset_statistics_equal_sequential(
    dask_local: Run, sequential: Run
) -> None:
    """kedro-viz's DatasetStatsHook: the same .viz/stats.json, and no
    "Unable to create statistics" warning."""
    assert sequential.viz_stats, sequential.evidence
    assert sequential.viz_stats["iris"]["rows"] == 150, sequential.viz_stats
    assert STATS_WARNING not in sequential.output
    assert dask_local.returncode == 0, dask_local.evidence
    warned = [line for line in dask_local.output.splitlines() if STATS_WARNING in line]
    assert_same(
        dask_local.viz_stats, sequential.viz_stats, ".viz/stats.json", dask_local
    )
    assert not warned, "\n".join(warned)


def _without_network() -> list[str]:
    """A prefix that runs a command with no network (a network namespace of
    its own, loopback down), where this machine allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"]).returncode == 0:
        return [unshare, "--net"]
    return []


def test_viz_build_works_offline(project: Path, dask_local: Run) -> None:
    """`kedro viz build` in the project, with the Dask run's .viz/stats.json: the
    static site is built (with no network, where the machine can take it away)
    and shows the run's statistics."""
    shutil.rmtree(project / "build", ignore_errors=True)
    stats = project / ".viz" / "stats.json"
    stats.parent.mkdir(exist_ok=True)
    stats.write_text(json.dumps(dask_local.viz_stats or {}))
    prefix = _without_network()
    built = run_command(
        [*prefix, str(BIN / "kedro"), "viz", "build"],
        project,
        timeout=180,
        env=_kedro_env(),
    )
    print(f"\n[kedro viz build] {'without network' if prefix else 'with network'}")
    assert built.returncode == 0, built.output
    assert "Success!" in built.output, built.output
    assert (project / "build" / "index.html").is_file()
    main = json.loads((project / "build" / "api" / "main").read_text())
    ids = {node["name"]: node["id"] for node in main["nodes"]}
    assert {"iris", "checkpoint", "track_metrics"} <= set(ids), sorted(ids)
    iris = json.loads((project / "build" / "api" / "nodes" / ids["iris"]).read_text())
    assert iris["stats"] == (dask_local.viz_stats or {}).get("iris"), iris


# --- the tests' own plugin in settings.HOOKS ----------------------------------------------


def test_own_hooks_summary_equal_sequential(dask_local: Run, sequential: Run) -> None:
    """State set in after_context_created / after_catalog_created /
    before_pipeline_run is there in every node and dataset hook, and what those
    accumulate reaches after_pipeline_run: the same summary."""
    summary = sequential.summary
    assert summary and summary["outcome"] == "completed", sequential.evidence
    assert summary["problems"] == [], summary
    assert len(summary["nodes"]) == summary["pipeline nodes"] == DEFAULT_NODES
    assert all(node["in the pipeline"] for node in summary["nodes"].values())
    assert_same(dask_local.summary, summary, "the own hooks' summaries", dask_local)


# --- the console ----------------------------------------------------------------------


_RICH = re.compile(
    r"^(?:\s*\[[^\]]*\])?\s*WARNING\s+(?P<message>.*?)(?:\s+\S+:\d+)?\s*$"
)
_NOISE = [
    (re.compile(r"\d{4}-\d\d-\d\d[ T][\d:,.]+"), "<time>"),
    (re.compile(r"0x[0-9a-f]+"), "<address>"),
    (re.compile(r"(tcp|tls)://[\w.]+:\d+"), "<dask address>"),
    (re.compile(r"\b(Sequential|Dask)Runner\b"), "<runner>"),
]


def warning_lines(output: str) -> Counter:
    """The WARNING log lines and Python warnings a run printed, each reduced
    to what does not differ with the runner, counted."""
    found: Counter = Counter()
    for line in output.splitlines():
        if not re.search(r"\bWARNING\b|\w+Warning: ", line):
            continue
        rich = _RICH.match(line)
        text = rich.group("message") if rich else line.strip()
        for pattern, replacement in _NOISE:
            text = pattern.sub(replacement, text)
        if not any(known in text for known in RUNNER_ONLY_WARNINGS):
            found[" ".join(text.split())] += 1
    return found


def test_console_no_noisier_than_sequential(dask_local: Run, sequential: Run) -> None:
    """A Dask run with these plugins prints no warning Sequential's does not,
    and a warning printed when the project's hooks are imported appears once,
    not once per worker."""
    assert dask_local.returncode == 0, dask_local.evidence
    assert sequential.output.count(IMPORT_WARNING) == 1, sequential.output
    extra = warning_lines(dask_local.output) - warning_lines(sequential.output)
    assert not extra, "\n".join(f"{n} x {line}" for line, n in extra.items())
    assert dask_local.output.count(IMPORT_WARNING) == 1
