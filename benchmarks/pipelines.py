"""The benchmark pipelines, defined once and built for every runner.

Each pipeline is a ``Graph`` of ``Step``s: a runner-neutral description that
``kedro_pipeline`` turns into a Kedro ``Pipeline`` (for the Kedro runners and
``DaskRunner``) and ``submit_raw`` into ``client.submit`` calls with futures (the
raw ``distributed`` floor). Node functions live at module level, so Dask workers
and ``ParallelRunner``'s processes import them instead of unpickling closures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

#: Nodes per layer of pipeline A.
WIDTH = 10
#: Independent CPU nodes of pipeline B.
CPU_NODES = 8
#: Nodes of pipeline C's chain: one makes the array, the last sums it.
CHAIN_NODES = 10
#: Partitions of pipeline E's frame, and its value columns (plus an int key).
E_PARTITIONS = 32
_E_VALUES = ("a", "b", "c")
_MODULUS = 1_000_003


# --- Node functions -----------------------------------------------------------


def start() -> int:
    """A node of A's first layer: no inputs."""
    return 1


def combine(a: int, b: int) -> int:
    """A trivial node of A: two parents in, a small int out."""
    return (a + b) % _MODULUS


def burn(iterations: int) -> int:
    """Pure-Python CPU work of B: holds the GIL for its whole duration."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % _MODULUS
    return total


def join(*values: int) -> int:
    return sum(values) % _MODULUS


def make_array(nbytes: int) -> np.ndarray:
    """C's first node: an array of ``nbytes`` bytes, every page touched."""
    return np.ones(nbytes // 8, dtype=np.float64)


def step(x: np.ndarray) -> np.ndarray:
    """A node of C's chain: a new array of the same size."""
    return x + 1.0


def checksum(x: np.ndarray) -> float:
    """C's last node: reduces the array, so only a float leaves the chain."""
    return float(x.sum())


def _synthetic_partition(index: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(index)
    values = {name: rng.random(rows) for name in _E_VALUES}
    return pd.DataFrame({"key": rng.integers(0, 100, rows), **values})


def synthetic_frame(megabytes: int) -> dd.DataFrame:
    """E's data: ``megabytes`` MiB of random numbers in ``E_PARTITIONS``
    partitions, each made where it is computed (nothing ships from the driver)."""
    rows = megabytes * 2**20 // (E_PARTITIONS * 8 * (1 + len(_E_VALUES)))
    return dd.from_map(
        partial(_synthetic_partition, rows=rows),
        range(E_PARTITIONS),
        meta=_synthetic_partition(0, 0),
    )


def grouped_sums(frame: dd.DataFrame) -> dd.DataFrame:
    return frame.groupby("key")[list(_E_VALUES)].sum(split_out=1)


def checksum_of_table(table: pd.DataFrame) -> float:
    return round(float(table.to_numpy().sum()), 3)


def aggregate_frame(megabytes: int) -> float:
    """E's node: builds the frame and computes its grouped sums, on the cluster
    that runs the node (dask's local threads under SequentialRunner)."""
    return checksum_of_table(grouped_sums(synthetic_frame(megabytes)).compute())


# --- Runner-neutral graphs ------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One node: ``output = func(*inputs)``."""

    name: str
    func: Callable[..., Any]
    inputs: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class Graph:
    """A pipeline: its steps in a valid run order and the values of its inputs."""

    name: str
    steps: tuple[Step, ...]
    inputs: dict[str, Any] = field(default_factory=dict)
    #: For a graph of one node that computes a dask collection: that
    #: computation, which the raw floor runs from the driver as a plain
    #: ``distributed.Client`` user would, instead of inside a task.
    from_the_driver: Callable[[Any], dict[str, Any]] | None = None

    @property
    def outputs(self) -> list[str]:
        """Datasets no step consumes: what a run returns."""
        consumed = {name for s in self.steps for name in s.inputs}
        return [s.output for s in self.steps if s.output not in consumed]


def overhead(n_nodes: int) -> Graph:
    """A: ``n_nodes`` trivial nodes in layers of ``WIDTH``; each node after the
    first layer takes two parents from the previous layer."""
    if n_nodes < WIDTH or n_nodes % WIDTH:
        raise ValueError(f"pipeline A needs a multiple of {WIDTH} nodes, not {n_nodes}")
    steps = [Step(f"a_0_{i}", start, (), f"v_0_{i}") for i in range(WIDTH)]
    for layer in range(1, n_nodes // WIDTH):
        for i in range(WIDTH):
            parents = (f"v_{layer - 1}_{i}", f"v_{layer - 1}_{(i + 1) % WIDTH}")
            steps.append(Step(f"a_{layer}_{i}", combine, parents, f"v_{layer}_{i}"))
    return Graph(f"A-{n_nodes}", tuple(steps))


def cpu_wide(iterations: int) -> Graph:
    """B: ``CPU_NODES`` independent CPU-bound nodes, then a join."""
    steps = [
        Step(f"burn_{i}", burn, ("iterations",), f"burnt_{i}") for i in range(CPU_NODES)
    ]
    steps.append(Step("join", join, tuple(s.output for s in steps), "joined"))
    return Graph("B", tuple(steps), {"iterations": iterations})


def data_chain(megabytes: int) -> Graph:
    """C: a chain of ``CHAIN_NODES`` nodes passing an array of ``megabytes`` MB."""
    steps = [Step("make_array", make_array, ("nbytes",), "array_0")]
    for i in range(1, CHAIN_NODES - 1):
        steps.append(Step(f"step_{i}", step, (f"array_{i - 1}",), f"array_{i}"))
    steps.append(Step("checksum", checksum, (f"array_{CHAIN_NODES - 2}",), "array_sum"))
    return Graph(f"C-{megabytes}MB", tuple(steps), {"nbytes": megabytes * 2**20})


def dask_collection(megabytes: int) -> Graph:
    """E: one node that aggregates a ``megabytes`` MiB dask.dataframe."""

    def from_the_driver(client: Any) -> dict[str, Any]:
        table = client.compute(grouped_sums(synthetic_frame(megabytes))).result()
        return {"checksum": checksum_of_table(table)}

    return Graph(
        f"E-{megabytes}MB",
        (Step("aggregate", aggregate_frame, ("megabytes",), "checksum"),),
        {"megabytes": megabytes},
        from_the_driver,
    )


# --- Building them for each runner ------------------------------------------------


def kedro_pipeline(graph: Graph) -> Any:
    """The Kedro ``Pipeline`` of ``graph``; its inputs are catalog entries."""
    from kedro.pipeline import Node, Pipeline

    return Pipeline(
        [
            Node(s.func, list(s.inputs) or None, s.output, name=s.name)
            for s in graph.steps
        ]
    )


def kedro_catalog(graph: Graph, shared_memory: bool = False) -> Any:
    """A catalog holding ``graph``'s inputs; every other dataset is in memory.
    ``ParallelRunner`` needs the ``SharedMemoryDataCatalog``."""
    from kedro.io import DataCatalog, MemoryDataset, SharedMemoryDataCatalog

    kind = SharedMemoryDataCatalog if shared_memory else DataCatalog
    return kind(
        datasets={name: MemoryDataset(data=v) for name, v in graph.inputs.items()}
    )


def submit_raw(client: Any, graph: Graph, token: str) -> dict[str, Any]:
    """Submits ``graph`` with one ``client.submit`` per step, futures as arguments,
    and returns the futures of its outputs only: Dask frees every intermediate
    result once its consumers have run. ``token`` makes the keys unique per run.

    Keys start with the function's name, as ``dask.delayed`` names them: Dask
    keeps state per key prefix, and a prefix per step made this floor 1.75x
    slower at 3,000 nodes. Plain strings, unlike DaskRunner's one-element tuples
    (a task group per node): submitted one by one, a group per step made this
    floor 3.8x slower at 10,000 nodes (53.7 s against 14.2 s)."""
    values: dict[str, Any] = dict(graph.inputs)
    for s in graph.steps:
        values[s.output] = client.submit(
            s.func,
            *(values[name] for name in s.inputs),
            key=f"{s.func.__name__}-{token}-{s.name}",
            pure=False,
        )
    return {name: values[name] for name in graph.outputs}
