"""A Kedro pipeline as one Dask graph, one task per node. In-memory datasets are task
results: they move only to a consumer's worker and are freed after their last consumer.
A node needing a persisted dataset waits for its producer only."""

from __future__ import annotations

import operator
import queue
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import distributed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.sizeof import sizeof
from dask.utils import funcname
from kedro.io import AbstractDataset, DatasetError, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from toolz import identity

from .dask_collections import computes_dask_collections
from .errors import DaskSetupError, one_line, unpicklable
from .log_forwarding import quiet
from .node_task import Inline, NeverSaved, NodeTask, RunContext, run_node_task

#: Pipeline inputs up to this size travel inside the task of every node taking them.
INLINE_BYTES = 64 * 2**10
#: Key prefix of the instant output-picking and waiting tasks, which work stealing
#: never moves (``fast_tasks``): a moved one would copy all the node's outputs.
_NEVER_MOVED = "split-stage"
_UNSAVED = Inline(NeverSaved)  # for an in-memory input no node saves


@dataclass
class SubmittedGraph:
    """Holds no intermediate data: a node's future is dropped once the node finishes."""

    client: distributed.Client
    #: Kept to name the scheduler once it has gone away.
    scheduler_address: str
    #: Nodes not finished yet.
    node_futures: dict[distributed.Future, Node]
    #: Unpersisted pipeline outputs, returned to the caller.
    free_outputs: dict[str, distributed.Future]
    #: Tasks returning the large parameters and pre-filled ``MemoryDataset``s.
    inputs: list[distributed.Future] = field(default_factory=list)
    _done: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _lost: list[distributed.Future] = field(default_factory=list)

    def follow(self) -> None:
        """Queues each node future once done, with callbacks added in the client's
        loop (from here each wakes it; as_completed costs coroutines per future)."""

        async def follow(futures: list[distributed.Future]) -> None:
            for future in futures:
                future.add_done_callback(self._done.put)

        self.client.sync(follow, list(self.node_futures))

    def completed(self, timeout: float) -> list[distributed.Future]:
        """Futures done since the last call, holding back any lost with its worker."""
        try:
            batch = [self._done.get(timeout=timeout)]
        except queue.Empty:
            batch = []
        while not self._done.empty():
            batch.append(self._done.get())
        for future in [f for f in self._lost if f.status != "lost"]:
            self._lost.remove(future)
            if future.status == "pending":  # computed again: follow it again
                future.add_done_callback(self._done.put)
            else:
                batch.append(future)
        self._lost += [f for f in batch if f.status == "lost"]
        return [f for f in batch if f.status != "lost"]

    def gather_free(self, pipeline: Pipeline) -> dict[str, Any]:
        """The unpersisted outputs. One this process cannot load (a class of a package
        only the workers have) fails as its node, not deep inside Dask."""
        try:
            with quiet("distributed.protocol"):
                return dict(self.client.gather(self.free_outputs))
        except Exception as error:
            if self.client.status != "running":
                raise
            for name, future in self.free_outputs.items():
                with quiet("distributed.protocol"), suppress(Exception):
                    future.result()
                    continue  # this one loads
                node = next(node for node in pipeline.nodes if name in node.outputs)
                raise DatasetError(
                    f"{name}: Kedro node '{node.name}' returned data this process "
                    f"cannot load ({one_line(error)}). Install here what it needs, or "
                    f"save it with a dataset in the catalog."
                ) from error
            raise

    def cancel(self) -> None:
        """Releases every future: the scheduler drops the run's tasks, queued or
        running (``client.cancel`` asserts on tasks no client holds)."""
        futures = [*self.node_futures, *self.free_outputs.values(), *self.inputs]
        if self.client.status == "running":  # else they went with the scheduler
            for future in futures:
                future.release()
        for held in (self.node_futures, self.free_outputs, self.inputs):
            held.clear()


class TaskGraph:
    """The node tasks of one pipeline run, checked before anything is submitted."""

    def __init__(
        self, pipeline: Pipeline, datasets: dict[str, AbstractDataset], run: RunContext
    ) -> None:
        self._pipeline, self._run, self._datasets = pipeline, run, datasets
        self._memory = memory = {
            n: d._copy_mode for n, d in datasets.items() if isinstance(d, MemoryDataset)
        }
        # Subclasses' own save and load may change the data: producers save with them
        # for consumers; the driver saves a free output once (submit), as Kedro does.
        consumed = pipeline.all_inputs()
        custom = {
            n: datasets[n]
            for n in memory.keys() & consumed
            if type(datasets[n]) is not MemoryDataset
        }
        persisted_names = datasets.keys() - memory.keys()
        _fresh_for_workers(pipeline, datasets, persisted_names)
        self._tasks: dict[Node, NodeTask] = {}
        self.node_keys: dict[Node, tuple[str]] = {}
        for node in pipeline.nodes:
            self.node_keys[node] = (f"{funcname(node.func)}-{run.token}-{node.name}",)
            own = (*node.inputs, *node.outputs, *node.confirms)
            persisted = {n: datasets[n] for n in own if n in persisted_names}
            self._tasks[node] = NodeTask(
                node=node,
                run=run,
                persisted=persisted,
                memory_inputs=tuple((n, memory[n]) for n in node.inputs if n in memory),
                memory_outputs={n: memory[n] for n in node.outputs if n in memory},
                custom_outputs={n: custom[n] for n in node.outputs if n in custom},
                computes_dask=computes_dask_collections(node, persisted),
            )
        #: The parameters and pre-filled ``MemoryDataset``s the nodes take. One never
        #: filled fails its consumers as in Kedro, after the nodes that can run.
        self._inputs: dict[str, Any] = {}
        for name in sorted(pipeline.inputs() & memory.keys()):
            with suppress(DatasetError):
                self._inputs[name] = datasets[name].load()
        self._check_serialisable()
        #: Whether a node saves a dataset: a node computed again must not.
        self.saves_datasets = any(
            name not in memory for node in pipeline.nodes for name in node.outputs
        )

    def _check_serialisable(self) -> None:
        sent: list[tuple[str, Any]] = [(f"node '{n.name}'", n) for n in self._tasks]
        for name in sorted(self._datasets.keys() - self._memory.keys()):
            sent.append((f"dataset '{name}'", self._datasets[name]))
        sent += [(f"pipeline input '{n}'", value) for n, value in self._inputs.items()]
        problems = [
            f"{label}: {why}" for label, obj in sent if (why := _unsendable(obj))
        ]
        if problems:
            raise DaskSetupError(
                "These cannot be sent to Dask workers:\n  - "
                + "\n  - ".join(problems)
                + "\nFor what cannot be pickled: create locks, connections and open "
                "files inside the node, or use a dataset that opens them when it "
                "loads or saves."
            )

    def resources(
        self, tag_resources: dict[str, dict[str, float]]
    ) -> dict[Node, dict[str, float]]:
        """The Dask worker resources each node asks for through its tags."""
        wanted: dict[Node, dict[str, float]] = {}
        for node in self._tasks:
            for tag in sorted(node.tags & set(tag_resources)):
                for resource, amount in tag_resources[tag].items():
                    previous = wanted.setdefault(node, {}).get(resource, 0)
                    wanted[node][resource] = max(previous, amount)
        return wanted

    def submit(
        self,
        client: distributed.Client,
        retries: int,
        resources: dict[Node, dict[str, float]],
    ) -> SubmittedGraph:
        """One graph: one message, the run context pickled once. Nodes asking for the
        same resources share a layer, as Dask annotates whole layers."""
        token = self._run.token
        providers = self._pipeline_inputs(client)
        layers: dict[tuple, dict[tuple[str], tuple]] = {}
        finished: dict[Node, tuple[str]] = {}
        waits_for = self._order_only_parents()
        awaited = {parent for parents in waits_for.values() for parent in parents}
        for node, task in self._tasks.items():
            key = self.node_keys[node]
            asks = tuple(sorted(resources.get(node, {}).items()))
            layer = layers.setdefault(asks, {})
            layer[key] = (
                run_node_task,
                task,
                *(providers.get(name, _UNSAVED) for name, _ in task.memory_inputs),
                *(finished[parent] for parent in waits_for[node]),
            )
            outputs = list(task.memory_outputs)
            if len(outputs) == 1:
                providers[outputs[0]] = key
            else:
                for index, name in enumerate(outputs):
                    providers[name] = (f"{_NEVER_MOVED}-{token}-output-{name}",)
                    layer[providers[name]] = (operator.getitem, key, index)
            if node in awaited and outputs:  # wait for it without fetching its data
                finished[node] = (f"{_NEVER_MOVED}-{token}-done-{node.name}",)
                layer[finished[node]] = (_nothing, key)
            elif node in awaited:
                finished[node] = key
        # The pipeline's in-memory outputs (Pipeline.outputs() costs more).
        used = {name for task in self._tasks.values() for name, _ in task.memory_inputs}
        free = {name: key for name, key in providers.items() if name not in used}
        wanted = [*self.node_keys.values(), *free.values()]
        graph_layers = {
            f"kedro-nodes-{i}": MaterializedLayer(
                tasks, annotations={"resources": dict(asks)} if asks else None
            )
            for i, (asks, tasks) in enumerate(layers.items())
        }
        graph = HighLevelGraph(graph_layers, {name: set() for name in graph_layers})
        futures = dict(
            zip(wanted, client.get(graph, wanted, sync=False, retries=retries))
        )
        submitted = SubmittedGraph(
            client,
            client.scheduler.address,
            {futures[key]: node for node, key in self.node_keys.items()},
            {name: futures[key] for name, key in free.items()},
            inputs=[p for p in providers.values() if isinstance(p, distributed.Future)],
        )
        submitted.follow()
        return submitted

    def _order_only_parents(self) -> dict[Node, list[Node]]:
        """For each node, the parents it waits for but takes no in-memory data from."""
        waits_for = {}
        for node, parents in self._pipeline.node_dependencies.items():
            takes = {name for name, _ in self._tasks[node].memory_inputs}
            waits_for[node] = [
                p for p in parents if takes.isdisjoint(self._tasks[p].memory_outputs)
            ]
        return waits_for

    def _pipeline_inputs(self, client: distributed.Client) -> dict[str, Any]:
        """Small values go inside each consumer's task; a large one becomes a task, not
        a ``scatter``: a lost task result is recomputed, scattered data is lost."""
        providers: dict[str, Any] = {}
        inputs, self._inputs = self._inputs, {}  # not kept here for the whole run
        for name, value in inputs.items():
            small = False  # an object Dask cannot size is sent as a task, to be safe
            with suppress(Exception):
                small = sizeof(value) <= INLINE_BYTES
            if small:
                providers[name] = Inline(value)
            else:
                key = f"{name}-{self._run.token}"
                providers[name] = client.submit(identity, value, key=key, pure=False)
        return providers


def _fresh_for_workers(
    pipeline: Pipeline, datasets: dict[str, AbstractDataset], persisted: set[str]
) -> None:
    """Workers get copies of the persisted datasets, which would keep what the driver
    cached (a version or partitions Kedro's ``exists()`` found) after a node saved
    anew: Kedro's own ``release`` drops it. A confirmed dataset (IncrementalDataset)
    no node of the run saves is then listed once, so the confirming node checkpoints
    what the loader read; one a node saves is listed where it is loaded, after that."""
    for name in persisted:
        datasets[name].release()
    confirmed = {name for node in pipeline.nodes for name in node.confirms}
    for name in (confirmed & persisted) - pipeline.all_outputs():
        if callable(listing := getattr(datasets[name], "_list_partitions", None)):
            listing()


def check_resources(
    client: distributed.Client, resources: dict[Any, dict[str, float]]
) -> None:
    """Refuses a node's resources no one worker has: Dask would wait for it forever."""
    wanted = {tuple(sorted(request.items())) for request in resources.values()}
    workers = client.scheduler_info(n_workers=-1)["workers"].values() if wanted else []
    held = [worker.get("resources", {}) for worker in workers]
    for request in sorted(wanted):
        if not any(all(has.get(r, 0) >= n for r, n in request) for has in held):
            asked = ",".join(f"{name}={amount:g}" for name, amount in request)
            raise DaskSetupError(
                f"dask_client.tag_resources asks for {asked} on one worker, but no "
                f"worker of this cluster has that much. Start workers with "
                f'`--resources "{asked}"`, or set `resources` in cluster_kwargs.'
            )


def _unsendable(obj: Any) -> str | None:
    if getattr(obj, "_SINGLE_PROCESS", False):  # CachedDataset, Spark's datasets
        return (
            f"{type(obj).__name__} only works in the process that created it, as "
            "for Kedro's ParallelRunner: run this pipeline with SequentialRunner or "
            "ThreadRunner, or use another dataset type (for CachedDataset, the one "
            "it wraps)"
        )
    return unpicklable(obj)


def _nothing(_: Any) -> None:
    return None
