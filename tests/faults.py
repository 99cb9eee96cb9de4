"""The fault-test project: a rendered project with extra pipelines whose nodes
burn CPU, sleep, fail on demand and leave start markers, and the helpers that
start `kedro run` on it as a user's terminal would and watch it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from .conftest import BIN, DASK_RUNNER, ENV, PACKAGE, render
from .shared import kill_group, tail

# The fault pipelines, added to a rendered project as the module
# <package>/fault_nodes.py and one pipeline package per pipeline.
FAULT_NODES = '''\
"""Pipelines of the template's fault tests (written by tests/test_faults.py)."""

from __future__ import annotations

import os
import time
from functools import partial, update_wrapper
from pathlib import Path

from kedro.pipeline import Pipeline, node

WIDTH, DEPTH = {width}, {depth}
CPU_NODES = {cpu_nodes}
SLOW_NODES = {slow_nodes}


def _mark(options: dict, name: str) -> None:
    """Leaves <markers>/<node>.<pid> holding the time the node started."""
    if options["markers"]:
        folder = Path(options["markers"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{{name}}.{{os.getpid()}}").write_text(repr(time.time()))


def busy(options: dict, *, name: str, seed: int) -> dict:
    _mark(options, name)
    deadline = time.monotonic() + options["busy_seconds"]
    spin = 0
    while time.monotonic() < deadline:  # pure Python, holding the GIL
        spin = (spin * 31 + 7) % 1_000_003
    return {{"node": name, "value": sum(i * i for i in range(seed * 10_000))}}


def summarise(part: dict) -> dict:
    return {{"summary_of": part["node"], "value": part["value"] % 1_000_003}}


def total(*summaries: dict) -> dict:
    return {{"total": sum(s["value"] for s in summaries), "parts": len(summaries)}}


def slow(options: dict, *, name: str) -> dict:
    _mark(options, name)
    deadline = time.monotonic() + options["sleep_seconds"]
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {{"node": name, "value": 1}}


def hog(options: dict) -> int:
    """Takes memory 20 MB at a time until it holds faults.hog_mb MB."""
    _mark(options, "hog")
    held = []
    while len(held) * 20 < options["hog_mb"]:
        held.append(bytearray(20 * 2**20))  # zero-filled: really resident
        time.sleep(0.01)
    return len(held)


def wide(options: dict, *upstream: int, name: str, layer: int, index: int) -> int:
    _mark(options, name)
    if options["wide_sleep"]:
        time.sleep(options["wide_sleep"])
    if name == options["fail_node"]:
        Path(options["fail_time_file"]).write_text(repr(time.time()))
        raise ValueError(f"Planned failure in {{name}}")
    return (sum(upstream) * 31 + layer * 17 + index) % 1_000_003


def _named(function, **keywords):
    """``partial(function, **keywords)`` that Kedro can name and inspect."""
    return update_wrapper(partial(function, **keywords), function)


def cpu_pipeline() -> Pipeline:
    """CPU-bound nodes, each followed by a node that persists its summary."""
    nodes = []
    for i in range(CPU_NODES):
        nodes.append(
            node(
                _named(busy, name=f"cpu_{{i}}", seed=i + 1),
                "params:faults",
                f"faults_cpu_part_{{i}}",
                name=f"cpu_{{i}}",
            )
        )
        nodes.append(
            node(
                summarise,
                f"faults_cpu_part_{{i}}",
                f"faults_cpu_summary_{{i}}",
                name=f"summarise_{{i}}",
            )
        )
    summaries = [f"faults_cpu_summary_{{i}}" for i in range(CPU_NODES)]
    nodes.append(node(total, summaries, "faults_cpu_total", name="cpu_total"))
    return Pipeline(nodes)


def chain_pipeline() -> Pipeline:
    """One CPU-bound node takes the parameters; the nodes after it don't."""
    return Pipeline(
        [
            node(
                _named(busy, name="chain_0", seed=5),
                "params:faults",
                "faults_chain_part",
                name="chain_0",
            ),
            node(summarise, "faults_chain_part", "faults_chain_mid", name="chain_1"),
            node(total, "faults_chain_mid", "faults_chain_summary", name="chain_2"),
        ]
    )


def slow_pipeline() -> Pipeline:
    """Nodes that sleep for params faults.sleep_seconds."""
    nodes = [
        node(
            _named(slow, name=f"slow_{{i}}"),
            "params:faults",
            f"faults_slow_{{i}}",
            name=f"slow_{{i}}",
            tags=["slow"],
        )
        for i in range(SLOW_NODES)
    ]
    parts = [f"faults_slow_{{i}}" for i in range(SLOW_NODES)]
    nodes.append(node(total, parts, "faults_slow_total", name="slow_total"))
    return Pipeline(nodes)


def hog_pipeline() -> Pipeline:
    """One node that takes params faults.hog_mb MB of memory."""
    return Pipeline([node(hog, "params:faults", "faults_hog_chunks", name="hog")])


def wide_pipeline() -> Pipeline:
    """DEPTH layers of WIDTH cheap nodes; node (k, i) takes the in-memory outputs
    of nodes (k-1, i) and (k-1, i+1); the last layer's outputs are persisted."""
    nodes = []
    for layer in range(DEPTH):
        for index in range(WIDTH):
            name = f"wide_{{layer}}_{{index}}"
            inputs = ["params:faults"]
            if layer:
                inputs += [
                    f"wide_data_{{layer - 1}}_{{index}}",
                    f"wide_data_{{layer - 1}}_{{(index + 1) % WIDTH}}",
                ]
            last = layer == DEPTH - 1
            output = f"faults_wide_out_{{index}}" if last else f"wide_data_{{layer}}_{{index}}"
            nodes.append(
                node(
                    _named(wide, name=name, layer=layer, index=index),
                    inputs,
                    output,
                    name=name,
                )
            )
    return Pipeline(nodes)
'''

WIDTH, DEPTH = 20, 10  # the wide pipeline: 200 nodes
SLOW_NODES = 4  # the slow pipeline: 4 sleeping nodes and their total
CPU_NODES = 4  # the cpu pipeline: 4 busy nodes, their summaries and a total

PARAMETERS = """\
faults:
  markers: ""          # folder for the nodes' start markers; "" for none
  busy_seconds: 0      # CPU time of each cpu_* node
  sleep_seconds: 0     # sleep of each slow_* node
  wide_sleep: 0        # sleep of each wide_* node
  fail_node: ""        # the wide_* node that raises
  fail_time_file: ""   # where it writes the time it raises
  hog_mb: 0            # memory the hog node takes
"""

CATALOG = """\
"faults_cpu_summary_{{i}}":
  type: json.JSONDataset
  filepath: data/{folder}/cpu/summary_{{i}}.json

faults_cpu_total:
  type: json.JSONDataset
  filepath: data/{folder}/cpu/total.json

faults_chain_summary:
  type: json.JSONDataset
  filepath: data/{folder}/chain/summary.json

"faults_wide_out_{{i}}":
  type: json.JSONDataset
  filepath: data/{folder}/wide/out_{{i}}.json
"""

# `--env faults_b` writes the same datasets to another folder.
OTHER_ENV, OTHER_FOLDER = "faults_b", "10_faults_b"


def fault_project(output_dir: Path) -> Path:
    """A rendered project with the fault pipelines faults_cpu, faults_slow and
    faults_wide, their parameters, and an environment writing elsewhere."""
    project = render(output_dir)
    package = project / "src" / PACKAGE
    (package / "fault_nodes.py").write_text(
        FAULT_NODES.format(
            width=WIDTH, depth=DEPTH, slow_nodes=SLOW_NODES, cpu_nodes=CPU_NODES
        )
    )
    for name in ("cpu", "chain", "slow", "hog", "wide"):
        folder = package / "pipelines" / f"faults_{name}"
        folder.mkdir()
        (folder / "__init__.py").write_text(
            f"from {PACKAGE}.fault_nodes import {name}_pipeline as create_pipeline\n\n"
            f'__all__ = ["create_pipeline"]\n'
        )
    (project / "conf/base/parameters_faults.yml").write_text(PARAMETERS)
    (project / "conf/base/catalog_faults.yml").write_text(
        CATALOG.format(folder="09_faults")
    )
    (project / "conf" / OTHER_ENV).mkdir()
    (project / "conf" / OTHER_ENV / "catalog_faults.yml").write_text(
        CATALOG.format(folder=OTHER_FOLDER)
    )
    return project


DASK_CLIENT_KEYS = {"address", "dashboard_address", "memory_limit", "tag_timeouts"}


def params(**values: Any) -> str:
    """`--params` for the faults block and some dask_client keys."""
    items = []
    for key, value in values.items():
        block = "dask_client" if key.split(".")[0] in DASK_CLIENT_KEYS else "faults"
        items.append(f"{block}.{key}={value}")
    return "--params=" + ",".join(items)


# A LocalCluster's dashboard on a free port: on a taken 8787 (another test's
# cluster) Dask warns, naming its own files.
ANY_DASHBOARD_PORT = "127.0.0.1:0"


def outputs(files: dict[str, bytes], folder: str) -> dict[str, bytes]:
    """The files under ``folder``, keyed by their path inside it."""
    prefix = folder.rstrip("/") + "/"
    return {
        name[len(prefix) :]: content
        for name, content in files.items()
        if name.startswith(prefix)
    }


# Starts a command with SIGINT at its default action, as a terminal starts its
# foreground job. A test run from a shell's background job (`cmd &` in a script)
# inherits SIGINT ignored, and so would every `kedro run` it starts: Ctrl-C could
# not reach them, whatever the runner does.
AS_FOREGROUND_JOB = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


@contextlib.contextmanager
def started_kedro(
    project: Path, *args: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`kedro <args>` in its own process group (environment ``env``, default
    ``ENV``), printing into ``log`` line by line, with SIGINT at its default;
    the group is killed on the way out if it is still running."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*AS_FOREGROUND_JOB, str(BIN / "kedro"), *args],
            cwd=project,
            env={**(env or ENV), "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        kill_group(process)


@dataclass
class DaskRun:
    """A started `kedro run` of a fault pipeline on DaskRunner."""

    process: subprocess.Popen[bytes]
    #: Where its nodes leave their start markers.
    markers: Path
    log: Path


@contextlib.contextmanager
def started_dask_run(
    project: Path, folder: Path, pipeline: str, **values: Any
) -> Iterator[DaskRun]:
    """`kedro run --pipelines=<pipeline>` on DaskRunner (see ``started_kedro``),
    its markers folder and log in ``folder``, ``values`` given as ``params``."""
    run_markers, log = folder / "markers", folder / "run.log"
    with started_kedro(
        project,
        "run",
        f"--runner={DASK_RUNNER}",
        f"--pipelines={pipeline}",
        params(markers=run_markers, **values),
        log=log,
    ) as process:
        yield DaskRun(process, run_markers, log)


def finish(process: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    """Waits for ``process``, failing (the caller kills its group) after ``timeout``."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kedro run did not finish in {timeout} s:\n{tail(log)}")


def markers(folder: Path) -> dict[str, list[int]]:
    """The nodes that started, each with the process ids it started in."""
    started: dict[str, list[int]] = {}
    if folder.is_dir():
        for marker in folder.iterdir():
            name, _, pid = marker.name.rpartition(".")
            started.setdefault(name, []).append(int(pid))
    return started


def start_times(folder: Path) -> list[float]:
    return [float(marker.read_text()) for marker in folder.iterdir()]


def downstream_of(layer: int, index: int) -> set[str]:
    """The wide pipeline's nodes that need node (layer, index), directly or not."""
    reached, frontier = set(), {index}
    for below in range(layer + 1, DEPTH):
        # (k, i) takes (k-1, i) and (k-1, i+1): (k-1, j) feeds (k, j) and (k, j-1).
        frontier = {j for i in frontier for j in (i, (i - 1) % WIDTH)}
        reached |= {f"wide_{below}_{j}" for j in frontier}
    return reached


def is_worker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "spawn_main" in " ".join(process.cmdline())
    return False
