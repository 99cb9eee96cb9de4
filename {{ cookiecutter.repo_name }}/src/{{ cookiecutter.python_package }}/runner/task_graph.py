"""Turning a Kedro pipeline into Dask tasks.

Each node becomes one task, keyed ``(<function>-<run token>-<node name>,)``. In-memory
datasets (names the catalog doesn't persist, and ``MemoryDataset`` entries) are task results:
they stay on the worker that made them, move only to a worker whose node needs
them, and Dask frees them once their last consumer has finished. A node that
needs a persisted dataset waits for its producer but takes no data from it.
"""

from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass, field
from typing import Any

import distributed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.sizeof import sizeof
from distributed.protocol.pickle import dumps
from kedro.io import AbstractDataset, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node

from .client_config import DaskSetupError
from .dask_collections import computes_dask_collections
from .node_task import Inline, NodeTask, RunContext, run_node_task
from .shared_storage import SharedStorage

#: Pipeline inputs (parameters, pre-filled ``MemoryDataset``s) up to this size
#: travel inside the task of every node that takes them.
INLINE_BYTES = 64 * 2**10


@dataclass
class SubmittedGraph:
    """The futures the driver holds for a submitted pipeline.

    It holds no intermediate data: a node's future is dropped once the node has
    finished, so Dask frees its in-memory outputs after their last consumer.
    """

    client: distributed.Client
    #: Where the scheduler was when the run was submitted.
    scheduler_address: str
    #: Futures of the nodes that have not finished yet.
    node_futures: dict[distributed.Future, Node]
    #: Pipeline outputs without a persisting catalog entry, returned to the caller.
    free_outputs: dict[str, distributed.Future]
    #: Tasks returning the large parameters and pre-filled ``MemoryDataset``s
    #: (small ones travel inside the nodes' tasks).
    inputs: list[distributed.Future] = field(default_factory=list)

    def cancel(self) -> None:
        """Stops every node that has not finished and forgets all futures.

        Releasing every future this run holds leaves no task of it wanted, so
        the scheduler drops them all, queued or running. ``client.cancel`` would
        do the same but trips an assertion inside Dask's scheduler (its traceback
        in the console) on the run's internal tasks, which no client holds.
        """
        if self.client.status != "running":
            self.forget()  # the scheduler is gone, and the futures with it
            return
        for future in [*self.node_futures, *self.free_outputs.values(), *self.inputs]:
            future.release()
        self.forget()

    def forget(self) -> None:
        """Drops the futures without a word to the scheduler."""
        self.node_futures.clear()
        self.free_outputs.clear()
        self.inputs.clear()


class TaskGraph:
    """The node tasks of one pipeline run, checked before anything is submitted."""

    def __init__(
        self,
        pipeline: Pipeline,
        datasets: dict[str, AbstractDataset],
        run: RunContext,
        timed_nodes: frozenset[str] = frozenset(),
        storage: SharedStorage | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._storage = storage
        self._run = run
        self._datasets = datasets
        self._memory = {
            name: getattr(dataset, "_copy_mode", None)
            for name, dataset in datasets.items()
            if isinstance(dataset, MemoryDataset)
        }
        self._tasks = {
            node: self._node_task(node, datasets, node.name in timed_nodes)
            for node in pipeline.nodes
        }
        self._waits_for = self._order_only_parents()
        self._check_serialisable(datasets)
        #: Persisted datasets built with ``credentials``, which their nodes'
        #: tasks carry to the workers.
        self.with_credentials = sorted(
            name
            for name, dataset in datasets.items()
            if name not in self._memory
            and (getattr(dataset, "_init_args", None) or {}).get("credentials")
        )

    @property
    def nodes(self) -> list[Node]:
        return self._pipeline.nodes

    def _node_task(
        self,
        node: Node,
        datasets: dict[str, AbstractDataset],
        timed: bool,
    ) -> NodeTask:
        own = {*node.inputs, *node.outputs, *node.confirms}
        persisted = {name: datasets[name] for name in own if name not in self._memory}
        return NodeTask(
            node=node,
            run=self._run,
            persisted=persisted,
            memory_inputs=tuple(
                (name, self._memory[name])
                for name in node.inputs
                if name in self._memory
            ),
            memory_outputs=tuple(name for name in node.outputs if name in self._memory),
            announces_start=timed,
            computes_dask_collections=computes_dask_collections(node, persisted),
            uses_local_files=bool(self._storage and self._storage.uses(persisted)),
        )

    def _order_only_parents(self) -> dict[Node, list[Node]]:
        """For each node, the parents that give it only persisted data: the node
        must wait for them but takes no data from them."""
        waits_for = {}
        for node, parents in self._pipeline.node_dependencies.items():
            memory_inputs = {name for name, _ in self._tasks[node].memory_inputs}
            waits_for[node] = [
                parent
                for parent in parents
                if not memory_inputs & set(self._tasks[parent].memory_outputs)
            ]
        return waits_for

    def _check_serialisable(self, datasets: dict[str, AbstractDataset]) -> None:
        """Names every node and dataset that a worker process could not receive."""
        problems = [
            f"node '{node.name}': {reason}"
            for node in self.nodes
            if (reason := _pickling_problem(node))
        ]
        for name, dataset in sorted(datasets.items()):
            if name in self._memory:
                continue
            if getattr(dataset, "_SINGLE_PROCESS", False):
                problems.append(
                    f"dataset '{name}': {type(dataset).__name__} only works in the "
                    f"process that created it"
                )
            elif reason := _pickling_problem(dataset):
                problems.append(f"dataset '{name}': {reason}")
        if problems:
            raise DaskSetupError(
                "DaskRunner sends nodes and datasets to Dask worker processes, and "
                "these cannot be sent:\n  - "
                + "\n  - ".join(problems)
                + "\nKeep locks, connections, open files and similar objects out of "
                "node functions' closures and dataset attributes: create them inside "
                "the node, or use a dataset that opens them when it loads or saves."
            )

    def resources(
        self, tag_resources: dict[str, dict[str, float]]
    ) -> dict[Node, dict[str, float]]:
        """The Dask worker resources each node asks for through its tags."""
        wanted: dict[Node, dict[str, float]] = {}
        for node in self.nodes:
            for tag in sorted(node.tags & set(tag_resources)):
                for resource, amount in tag_resources[tag].items():
                    previous = wanted.setdefault(node, {}).get(resource, 0)
                    wanted[node][resource] = max(previous, amount)
        return wanted

    def submit(
        self,
        client: distributed.Client,
        retries: int = 0,
        resources: dict[Node, dict[str, float]] | None = None,
    ) -> SubmittedGraph:
        """Submits every node in one graph; Dask starts each when its inputs exist.

        One graph, not a ``client.submit`` per node: the scheduler takes it in one
        message, and what the tasks share (the run's context) is pickled once.
        """
        resources = resources or {}
        providers = self._pipeline_inputs(client)
        layers: dict[tuple, dict[tuple[str], tuple]] = {}
        node_keys: dict[tuple[str], Node] = {}
        finished: dict[Node, tuple[str]] = {}
        awaited = {parent for parents in self._waits_for.values() for parent in parents}
        for node in self.nodes:
            task = self._tasks[node]
            key = _task_key(node, self._run.token)
            # Nodes that ask for the same worker resources share a layer, which
            # carries the request (Dask annotates whole layers).
            request = tuple(sorted(resources.get(node, {}).items()))
            layer = layers.setdefault(request, {})
            layer[key] = (
                run_node_task,
                task,
                *(providers[name] for name, _ in task.memory_inputs),
                *(finished[parent] for parent in self._waits_for[node]),
            )
            node_keys[key] = node
            outputs = task.memory_outputs
            if len(outputs) == 1:
                providers[outputs[0]] = key
            for index, name in enumerate(outputs if len(outputs) > 1 else ()):
                providers[name] = _helper_key("output", self._run.token, name)
                layer[providers[name]] = (operator.getitem, key, index)
            if node in awaited and outputs:  # wait for it without fetching its data
                finished[node] = _helper_key("finished", self._run.token, node.name)
                layer[finished[node]] = (_nothing, key)
            elif node in awaited:
                finished[node] = key
        free_outputs = {
            name: providers[name]
            for name in self._pipeline.outputs() & self._memory.keys()
        }
        wanted = [*node_keys, *free_outputs.values()]
        graph = _high_level_graph(layers)
        futures = dict(
            zip(wanted, client.get(graph, wanted, sync=False, retries=retries))
        )
        return SubmittedGraph(
            client,
            client.scheduler.address,
            {futures[key]: node for key, node in node_keys.items()},
            {name: futures[key] for name, key in free_outputs.items()},
            inputs=[p for p in providers.values() if isinstance(p, distributed.Future)],
        )

    def _pipeline_inputs(self, client: distributed.Client) -> dict[str, Any]:
        """Sends parameters and pre-filled ``MemoryDataset``s with the nodes' tasks.

        A small value travels inside the task of each node that takes it, so that
        node can start on any worker: Dask runs a task where its inputs are, and a
        value held by one worker would draw all its consumers there, to run one
        after another while other workers idle. A large value becomes one task
        that returns it, not a ``scatter``: a task's result that dies with its
        worker is recomputed elsewhere, scattered data is lost for good.
        """
        providers: dict[str, Any] = {}
        for name in sorted(self._pipeline.inputs() & self._memory.keys()):
            value = self._datasets[name].load()
            if _is_small(value):
                providers[name] = Inline(value)
            else:
                key = f"{name}-{self._run.token}"
                providers[name] = client.submit(_given, value, key=key, pure=False)
        return providers


def _high_level_graph(layers: dict[tuple, dict[tuple[str], tuple]]) -> HighLevelGraph:
    """The tasks as one graph: a layer per resource request, annotated with it.

    Tasks refer to each other by key across layers; Dask needs no order between
    layers to run them, only the tasks' own dependencies.
    """
    return HighLevelGraph(
        {
            f"kedro-nodes-{index}": MaterializedLayer(
                tasks, annotations={"resources": dict(request)} if request else None
            )
            for index, (request, tasks) in enumerate(layers.items())
        },
        {f"kedro-nodes-{index}": set() for index in range(len(layers))},
    )


def _task_key(node: Node, token: str) -> tuple[str]:
    """``(<function>-<run token>-<node name>,)``, so that Dask groups the tasks
    by function (the prefix: one bar and colour per function in the dashboard,
    as for ``dask.delayed``) while each node is a group of its own.

    A prefix per node made big pipelines slow: Dask keeps state per prefix, on
    the scheduler for good and in every worker heartbeat (docs/benchmarks.md,
    A). A group per function instead would make the scheduler treat a big group
    as root tasks and place them ignoring where their inputs are; a tuple key is
    how a Dask key gets a group of its own under a shared prefix.
    """
    func = node.func
    while isinstance(func, functools.partial):
        func = func.func
    name = re.sub(r"\W+", "_", getattr(func, "__name__", type(func).__name__))
    name = name.strip("_") or "node"
    return (f"{name if name[0].isalpha() else 'node_' + name}-{token}-{node.name}",)


def _helper_key(kind: str, token: str, name: str) -> tuple[str]:
    """The key of a task that takes one output out of a node's result, or that
    waits for a node without its data: a group of its own too, or Dask would
    take a node's many outputs for root tasks and move its result to take them
    out elsewhere."""
    return (f"{kind}-{token}-{name}",)


def _is_small(value: Any) -> bool:
    try:
        return bool(sizeof(value) <= INLINE_BYTES)
    except Exception:  # an object Dask cannot size is sent as a task, to be safe
        return False


def _nothing(_: Any) -> None:
    return None


def _given(value: Any) -> Any:
    return value


def _pickling_problem(obj: Any) -> str | None:
    try:
        dumps(obj)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
