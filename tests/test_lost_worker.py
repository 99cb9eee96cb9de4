"""Workers that die around a node's saves. One that dies after its node finished:
Dask computes the node again to rebuild the in-memory output lost with the
worker, and the run must still save the node's datasets and fire its hooks once,
as SequentialRunner does. One that dies while its node saves: Dask runs the node
again, which must save its outputs anew, versioned ones too."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

from .conftest import (
    DASK_RUNNER,
    ENV,
    PACKAGE,
    CliCluster,
    cli_cluster,
    kedro,
    render,
)
from .faults import finish, started_kedro
from .shared import tail, wait_for

NODES = '''\
"""A pipeline whose first node appends rows to a file and passes a token on."""

import time

import pandas as pd
from kedro.pipeline import Pipeline, node


def append_rows() -> tuple[pd.DataFrame, str]:
    return pd.DataFrame({"row": [1, 2, 3]}), "token"


def use_now(token: str) -> dict:
    return {"used": token}


def wait(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def use_later(token: str, waited: float) -> dict:
    return {"used": token, "after": waited}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(append_rows, None, ["appended_rows", "token"], name="append_rows",
                 tags=["first"]),
            node(use_now, "token", "used_now", name="use_now", tags=["first"]),
            node(wait, "params:wait_seconds", "waited", name="wait", tags=["second"]),
            node(use_later, ["token", "waited"], "used_later", name="use_later"),
        ]
    )
'''

HOOKS = '''\
"""Appends one line per node hook call to the file named in $NODE_HOOK_LOG, and
at the run's end one with the nodes the plugin's state recorded (on the driver,
where Kedro's plugins read it: a worker's copy may have died with the worker)."""

import os

from kedro.framework.hooks import hook_impl


class NodeHookLog:
    def __init__(self) -> None:
        self.path = os.environ.get("NODE_HOOK_LOG")
        self.finished = []

    def _write(self, *fields: str) -> None:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as log:
                log.write(" ".join(fields) + "\\n")

    @hook_impl
    def before_node_run(self, node):
        self._write("before_node_run", node.name)

    @hook_impl
    def after_node_run(self, node):
        self._write("after_node_run", node.name)
        self.finished.append(node.name)

    @hook_impl
    def after_pipeline_run(self):
        self._write("recorded", *sorted(self.finished))
'''

CATALOG = """\
appended_rows:
  type: pandas.CSVDataset
  filepath: data/09_lost/appended_rows.csv
  save_args: {header: false, index: false}
  fs_args:
    open_args_save: {mode: ab}

used_now:
  type: json.JSONDataset
  filepath: data/09_lost/used_now.json

used_later:
  type: json.JSONDataset
  filepath: data/09_lost/used_later.json
"""


def project_with(
    folder: Path, pipeline: str, nodes: str, hooks: tuple[str, str, str], catalog: str
) -> Path:
    """A rendered project with ``pipeline`` (its ``nodes`` module), a hooks module
    ``(module, class, text)`` registered in settings.py, and its catalog."""
    project = render(folder)
    package = project / "src" / PACKAGE
    (package / "pipelines" / pipeline).mkdir()
    (package / "pipelines" / pipeline / "__init__.py").write_text(nodes)
    module, hook_class, text = hooks
    (package / f"{module}.py").write_text(text)
    settings = package / "settings.py"
    settings.write_text(
        settings.read_text()
        + f"\nfrom {PACKAGE}.{module} import {hook_class}\n\nHOOKS = ({hook_class}(),)\n"
    )
    (project / f"conf/base/catalog_{pipeline}.yml").write_text(catalog)
    return project


def lost_worker_project(folder: Path) -> Path:
    hooks = ("node_hook_log", "NodeHookLog", HOOKS)
    project = project_with(folder, "lost", NODES, hooks, CATALOG)
    (project / "conf/base/parameters_lost.yml").write_text("wait_seconds: 0\n")
    return project


def hook_calls(log: Path) -> list[str]:
    return sorted(log.read_text().splitlines())


def _finished(cluster: CliCluster, node_name: str) -> bool:
    """Whether the scheduler has the node's task done (none of it still running)."""

    def done(suffix: str, dask_scheduler: Any) -> bool:
        states = [
            task.state
            for key, task in dask_scheduler.tasks.items()
            if str(key[0] if isinstance(key, tuple) else key).endswith(suffix)
        ]
        return bool(states) and "processing" not in states

    with cluster.client() as client:
        return bool(client.run_on_scheduler(done, f"-{node_name}"))


def test_a_node_recomputed_after_its_worker_died_saves_and_fires_hooks_once(
    tmp_path: Path,
):
    sequential = lost_worker_project(tmp_path / "sequential")
    sequential_log = tmp_path / "sequential-hooks.log"
    env = {**ENV, "NODE_HOOK_LOG": str(sequential_log)}
    result = kedro("run", "--pipelines=lost", cwd=sequential, env=env)
    assert result.returncode == 0, result.output[-3000:]

    project = lost_worker_project(tmp_path / "dask")
    dask_log = tmp_path / "dask-hooks.log"
    env = {**ENV, "NODE_HOOK_LOG": str(dask_log)}
    # One worker may run the first branch, the other the waiting node: the
    # first worker holds the token when it is killed, and its replacement (the
    # nanny restarts it with the same resources) computes the token again.
    with cli_cluster(
        tmp_path / "cluster", worker_resources=["first=1", "second=1"]
    ) as cluster:
        first = _worker_pid(cluster, "first")
        run_log = tmp_path / "run.log"
        with started_kedro(
            project,
            "run",
            f"--runner={DASK_RUNNER}",
            "--pipelines=lost",
            "--params=wait_seconds=8,dask_client.address="
            f"{cluster.address},dask_client.tag_resources.first.first=1,"
            "dask_client.tag_resources.second.second=1",
            log=run_log,
            env=env,
        ) as process:
            # Finished, not only saved: a task killed between its save and its end
            # runs again in full (Dask runs a task at least once).
            wait_for(
                lambda: (project / "data/09_lost/used_now.json").exists()
                and _finished(cluster, "use_now"),
                60,
                "the first branch to finish",
            )
            os.kill(first, signal.SIGKILL)
            killed_at = time.monotonic()
            assert finish(process, 60, run_log) == 0, tail(run_log)
        output = run_log.read_text()
    # The token was computed again after the kill, not the whole run.
    assert time.monotonic() - killed_at < 60
    assert "finished before on a lost Dask worker" in output, output
    # Kedro logs it running again; its saves and hooks do not happen again.
    assert output.count("Running node: append_rows") == 2, output
    rows = project / "data/09_lost/appended_rows.csv"
    assert (
        rows.read_text() == (sequential / "data/09_lost/appended_rows.csv").read_text()
    )
    assert rows.read_text().splitlines() == ["1", "2", "3"]
    assert hook_calls(dask_log) == hook_calls(sequential_log)
    assert len(hook_calls(dask_log)) == 9
    # What the dead worker's copy of the plugin recorded reached the driver.
    recorded = "recorded append_rows use_later use_now wait"
    assert hook_calls(dask_log)[-1] == recorded, hook_calls(dask_log)


def _worker_pid(cluster, resource: str) -> int:
    """The process id of the worker that has ``resource``."""
    with cluster.client() as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        pids = client.run(os.getpid)
    (address,) = [a for a, w in workers.items() if resource in w.get("resources", {})]
    return pids[address]


INTERRUPTED_NODES = '''\
"""A node whose versioned output is saved before the node's task ends."""

from kedro.pipeline import Pipeline, node


def fit() -> tuple[dict, dict]:
    return {"weights": [1, 2, 3]}, {"rows": 3}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([node(fit, None, ["model", "report"], name="fit")])
'''

#: Once, after the model is saved: cuts the model's file short, as a worker that
#: dies writing it would, and waits: the test kills the worker meanwhile.
STALL_HOOK = '''\
"""Cuts the first saved model short, writes this worker's process id to
$STALL_MARKER and waits."""

import os
import time
from pathlib import Path

from kedro.framework.hooks import hook_impl


class StallAfterModelSaved:
    @hook_impl
    def after_dataset_saved(self, dataset_name):
        marker = Path(os.environ["STALL_MARKER"])
        if dataset_name == "model" and not marker.exists():
            for saved in Path(os.environ["MODEL_FOLDER"]).glob("*/model.pkl"):
                saved.write_bytes(saved.read_bytes()[:5])
            marker.write_text(str(os.getpid()))
            time.sleep(120)
'''

INTERRUPTED_CATALOG = """\
model:
  type: pickle.PickleDataset
  filepath: data/09_lost/model.pkl
  versioned: true

report:
  type: json.JSONDataset
  filepath: data/09_lost/report.json
"""


def test_a_node_whose_worker_died_while_it_saved_runs_again_and_saves_anew(
    tmp_path: Path,
):
    hooks = ("stall_hook", "StallAfterModelSaved", STALL_HOOK)
    project = project_with(
        tmp_path / "project",
        "interrupted",
        INTERRUPTED_NODES,
        hooks,
        INTERRUPTED_CATALOG,
    )
    marker = tmp_path / "stalled"
    stall = {
        "STALL_MARKER": str(marker),
        "MODEL_FOLDER": str(project / "data/09_lost/model.pkl"),
    }
    with cli_cluster(tmp_path / "cluster", worker_env=stall) as cluster:
        run_log = tmp_path / "run.log"
        with started_kedro(
            project,
            "run",
            f"--runner={DASK_RUNNER}",
            "--pipelines=interrupted",
            f"--params=dask_client.address={cluster.address}",
            log=run_log,
            env={**ENV, **stall},
        ) as process:
            stalled = wait_for(
                lambda: marker.exists() and marker.read_text(),
                60,
                "the model saved",
                details=lambda: tail(run_log),
            )
            os.kill(int(stalled), signal.SIGKILL)
            assert finish(process, 60, run_log) == 0, tail(run_log)
        output = run_log.read_text()
    assert "runs again (its Dask worker died" in output, output
    (version,) = (project / "data/09_lost/model.pkl").iterdir()
    model = pickle.loads((version / "model.pkl").read_bytes())
    assert model == {"weights": [1, 2, 3]}
    report = json.loads((project / "data/09_lost/report.json").read_text())
    assert report == {"rows": 3}
