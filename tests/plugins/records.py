"""What an MLflow tracking store holds, as plain data two runners' records can be
compared by: ``assert dask == sequential`` shows a readable diff.

Everything is read back through ``mlflow.tracking.MlflowClient`` with an
explicit tracking URI: the tests' own process never sets MLflow's global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

#: Tags that name the runner or the command, or differ from run to run by
#: nature (Kedro's session id is the ``run_id`` tag; MLflow's own tags name
#: the user and the program that logged).
UNCOMPARED_TAGS = frozenset(
    {
        "runner",
        "kedro_command",
        "run_id",
        "mlflow.user",
        "mlflow.source.name",
        "mlflow.source.type",
        "mlflow.source.git.commit",
        "mlflow.source.git.branch",
        "mlflow.source.git.repoURL",
        "mlflow.gitRepoURL",
        "mlflow.runName",
        "mlflow.note.content",
    }
)
#: A nested run's parent is named by its place among its experiment's runs.
PARENT_TAG = "mlflow.parentRunId"

#: Folder and file names of the stores MLflow makes when given no tracking URI
#: (MLflow 3 defaults to ``sqlite:///mlflow.db`` in the working directory; older
#: ones to ``./mlruns``) and of local artifact roots.
STORE_NAMES = ("mlflow.db", "mlruns", "mlartifacts")


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def _all_runs(mlflow: MlflowClient, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = mlflow.search_runs(
            [experiment_id],
            run_view_type=ViewType.ALL,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


def _artifacts(mlflow: MlflowClient, run_id: str, path: str | None = None) -> list:
    found = []
    for item in mlflow.list_artifacts(run_id, path):
        if item.is_dir:
            found.extend(_artifacts(mlflow, run_id, item.path))
        else:
            found.append(item.path)
    return sorted(found)


def run_record(mlflow: MlflowClient, run: Any, order: dict[str, int]) -> dict:
    """One run: its name, status, params, metrics (key -> [(value, step)]),
    artifact paths and comparable tags. ``order`` numbers its experiment's runs
    (a parent run is named by its number)."""
    info, data = run.info, run.data
    metrics = {
        key: [
            (metric.value, metric.step)
            for metric in sorted(
                mlflow.get_metric_history(info.run_id, key),
                key=lambda metric: (metric.step, metric.timestamp, metric.value),
            )
        ]
        for key in sorted(data.metrics)
    }
    tags = {
        key: value for key, value in data.tags.items() if key not in UNCOMPARED_TAGS
    }
    if PARENT_TAG in tags:
        parent = tags[PARENT_TAG]
        tags[PARENT_TAG] = (
            f"run #{order[parent]} of this experiment"
            if parent in order
            else "a run of another experiment"
        )
    return {
        "name": info.run_name,
        "status": info.status,
        "lifecycle": info.lifecycle_stage,
        "params": dict(sorted(data.params.items())),
        "metrics": metrics,
        "artifacts": _artifacts(mlflow, info.run_id),
        "tags": dict(sorted(tags.items())),
    }


def experiment_records(tracking_uri: str, experiment: str) -> dict:
    """Every run of the experiment named ``experiment``, oldest first, and
    their number (``{"runs": 0, ...}`` when it does not exist)."""
    mlflow = client(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return {"experiment exists": False, "runs": 0, "records": []}
    runs = _all_runs(mlflow, found.experiment_id)
    order = {run.info.run_id: index for index, run in enumerate(runs)}
    return {
        "experiment exists": True,
        "runs": len(runs),
        "records": [run_record(mlflow, run, order) for run in runs],
    }


def runs_by_experiment(tracking_uri: str) -> dict[str, dict[str, int]]:
    """Every experiment of the store (MLflow's ``Default`` included), with how
    many runs it holds in each status."""
    mlflow = client(tracking_uri)
    found: dict[str, dict[str, int]] = {}
    for experiment in mlflow.search_experiments(view_type=ViewType.ALL):
        counts: dict[str, int] = {}
        for run in _all_runs(mlflow, experiment.experiment_id):
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
        found[experiment.name] = dict(sorted(counts.items()))
    return found


def running_runs(tracking_uri: str) -> dict[str, list[str]]:
    """The runs still RUNNING, by experiment: names of runs nobody ended."""
    mlflow = client(tracking_uri)
    found: dict[str, list[str]] = {}
    for experiment in mlflow.search_experiments(view_type=ViewType.ALL):
        names = [
            run.info.run_name
            for run in _all_runs(mlflow, experiment.experiment_id)
            if run.info.status == "RUNNING"
        ]
        if names:
            found[experiment.name] = names
    return found


def stray_stores(*folders: Path) -> list[str]:
    """MLflow stores made by default in these folders (not recursively into
    other folders): a process that logged without the project's tracking URI."""
    return sorted(
        str(folder / name)
        for folder in folders
        for name in STORE_NAMES
        if (folder / name).exists()
    )


def store_contents(path: Path) -> dict:
    """What a stray store holds: runs by experiment with their status, and the
    params and metrics logged into them (the records the real run lacks)."""
    if path.name != "mlflow.db":
        return {"store": str(path), "files": sorted(p.name for p in path.iterdir())}
    uri = f"sqlite:///{path}"
    mlflow = client(uri)
    contents: dict[str, Any] = {}
    for experiment in mlflow.search_experiments(view_type=ViewType.ALL):
        runs = _all_runs(mlflow, experiment.experiment_id)
        if runs:
            contents[experiment.name] = [
                {
                    "status": run.info.status,
                    "params": sorted(run.data.params),
                    "metrics": sorted(run.data.metrics),
                }
                for run in runs
            ]
    return {"store": uri, "runs": contents}


def differences(
    left: Any, right: Any, names: tuple[str, str] = ("Dask", "Sequential")
) -> str:
    """Where two records differ, one line each: for an assertion's message
    (pytest's own diff of long nested dicts is cut short)."""
    found: list[str] = []

    def short(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 300 else text[:300] + "..."

    def walk(a: Any, b: Any, where: str) -> None:
        if a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                here = f"{where}[{key!r}]"
                if key not in b:
                    found.append(f"{here}: only {names[0]}'s: {short(a[key])}")
                elif key not in a:
                    found.append(f"{here}: only {names[1]}'s: {short(b[key])}")
                else:
                    walk(a[key], b[key], here)
        elif isinstance(a, list) and isinstance(b, list):
            if all(isinstance(item, (dict, list)) for item in a + b):
                for index, (x, y) in enumerate(zip(a, b, strict=False)):
                    walk(x, y, f"{where}[{index}]")
                for index in range(len(b), len(a)):
                    found.append(
                        f"{where}[{index}]: only {names[0]}'s: {short(a[index])}"
                    )
                for index in range(len(a), len(b)):
                    found.append(
                        f"{where}[{index}]: only {names[1]}'s: {short(b[index])}"
                    )
            else:
                extra = [item for item in a if item not in b]
                missing = [item for item in b if item not in a]
                found.append(
                    f"{where}: {names[0]} has {len(a)} items, {names[1]} {len(b)}; "
                    f"only {names[0]}'s: {short(extra)}; only {names[1]}'s: "
                    f"{short(missing)}"
                )
        else:
            found.append(f"{where}: {names[0]} {short(a)} != {names[1]} {short(b)}")

    walk(left, right, "")
    return "\n".join(found)
