"""``DaskRunner`` runs a Kedro pipeline on a Dask cluster, one Dask task per node.

Examples (the same keys go in the ``dask_client`` block of ``parameters.yml``)::

    DaskRunner()                                   # a LocalCluster for this run
    DaskRunner(n_workers=4, threads_per_worker=1)  # ... of this size
    DaskRunner(address="tcp://10.0.0.5:8786")      # a scheduler already running
    DaskRunner(
        cluster_class="dask_jobqueue.SLURMCluster",
        cluster_kwargs={"cores": 8, "memory": "16GB"},
        adapt={"minimum": 1, "maximum": 10},
    )
"""

from __future__ import annotations

import copy
import os
import queue
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import dask.utils
import distributed
import kedro.framework.project as kedro_project
from kedro.io import CatalogProtocol, DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import AbstractRunner
from pluggy import PluginManager

from .client_config import DaskClientConfig, DaskRunError, DaskSetupError, merged
from .cluster import (
    check_not_a_worker_starting,
    credentials_in_the_clear,
    dask_client,
    start_worker_forkserver,
    workers_failed_to_start,
    workers_in_this_process,
    workers_share_this_machine,
)
from .log_forwarding import driver_logging_levels, forward_node_logs, this_process
from .node_task import RunContext
from .run_setup import workers_prepared
from .shared_storage import SharedStorage
from .task_graph import SubmittedGraph, TaskGraph
from .time_limits import NodeClock, time_limits
from .worker_hooks import worker_hooks


class DaskRunner(AbstractRunner):
    """Runs each node as a Dask task on the cluster ``dask_client`` describes.

    In-memory datasets pass between nodes as Dask futures and stay on the workers;
    persisted datasets are loaded and saved by the node's task on its worker.
    Node and dataset hooks fire on the workers, pipeline hooks on the driver.
    """

    def __init__(self, is_async: bool = False, **dask_client: Any) -> None:
        """Checks the settings now, so a bad one fails before anything starts,
        and for a LocalCluster starts the process its workers will fork from, so
        that it imports the project's code while Kedro loads the project.

        Args:
            is_async: Load and save each node's datasets with threads.
            **dask_client: The keys of ``DaskClientConfig``, or the keywords of
                ``distributed.LocalCluster`` / ``distributed.Client``.
        """
        super().__init__(is_async=is_async)
        check_not_a_worker_starting()
        self._options = dask_client
        self._config = DaskClientConfig.from_options(dask_client)
        start_worker_forkserver(self._config)
        #: What the run's plugins change here is sent to the workers (``worker_hooks``).
        self._environment = dict(os.environ)
        # When a worker was last seen connected, and last looked for.
        self._workers_last_seen = self._workers_checked = 0.0

    def run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
        only_missing_outputs: bool = False,
    ) -> dict[str, Any]:
        """Kedro's ``AbstractRunner.run``, with the in-memory datasets of the
        pipeline added to the catalog first, at a fraction of the cost of Kedro's
        warm-up (see ``add_memory_datasets``). With ``only_missing_outputs``,
        Kedro first drops nodes from the pipeline: its warm-up does it all then.

        The project's ``dask_client`` parameters, from the catalog, are the base
        of the runner's keywords: Kedro's own ``kedro run --runner=...`` builds
        the runner with ``--runner-params`` only.
        """
        if "params:dask_client" in catalog:
            project = catalog.get("params:dask_client").load() or {}
            self._config = DaskClientConfig.from_options(merged(project, self._options))
        if not only_missing_outputs:
            add_memory_datasets(pipeline, catalog)
        return super().run(
            pipeline, catalog, hook_manager, run_id, only_missing_outputs
        )

    def _get_executor(self, max_workers: int) -> None:
        """Dask schedules the nodes: there is no ``concurrent.futures`` executor."""
        return None

    def _run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
    ) -> None:
        if not pipeline.nodes:
            return
        token = uuid.uuid4().hex[:12]
        package_name = kedro_project.PACKAGE_NAME
        datasets = {name: catalog.get(name) for name in pipeline.datasets()}
        hooks = None
        if not workers_in_this_process(self._config):  # else they fire the driver's
            hooks = worker_hooks(hook_manager, self._environment)
        storage = None
        if self._config.check_shared_storage and not workers_share_this_machine(
            self._config
        ):
            storage = SharedStorage.of(datasets)
        run = RunContext(
            token=token,
            run_id=run_id,
            is_async=self._is_async,
            prepared=hooks is not None or storage is not None,
            logging_levels=driver_logging_levels(),
            driver_process=this_process(),
        )
        clock = NodeClock(time_limits(pipeline.nodes, self._config.tag_timeouts))
        graph = TaskGraph(pipeline, datasets, run, frozenset(clock.limits), storage)
        with (
            storage.marked(token) if storage else nullcontext() as storage,
            dask_client(self._config, package_name) as client,
            forward_node_logs(client, token),
            clock.running(client, token),
            self._performance_report(client),
            workers_prepared(client, token, hook_manager, hooks, storage),
        ):
            if warning := credentials_in_the_clear(graph.with_credentials, client):
                self._logger.warning(warning)
            resources = graph.resources(self._config.tag_resources)
            self._check_resources(client, resources)
            submitted = graph.submit(client, self._config.retries, resources)
            try:
                self._wait_for_nodes(submitted, pipeline, catalog, package_name, clock)
                self._keep_free_outputs(submitted, catalog)
            finally:
                submitted.cancel()

    def _wait_for_nodes(
        self,
        submitted: SubmittedGraph,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        package_name: str | None,
        clock: NodeClock,
    ) -> None:
        """Logs each finished node; on the first failure, stops the run and raises.

        At least every ``_POLL_SECONDS`` it checks that the scheduler is still
        there and that no node outran its time limit.
        """
        done_nodes: list[Node] = []
        total = len(submitted.node_futures)
        self._workers_last_seen = time.monotonic()
        self._workers_checked = 0.0
        completions = _following(submitted)
        lost: list[distributed.Future] = []
        checked = time.monotonic()
        while submitted.node_futures:
            finished = _next_completions(completions)
            if not finished or time.monotonic() - checked >= _POLL_SECONDS:
                self._check_progress(submitted, pipeline, catalog, done_nodes, clock)
                checked = time.monotonic()
            for future in [*finished, *_not_lost_any_more(lost, completions)]:
                if future.status == "lost":
                    # Its worker died after it finished: Dask computes it again.
                    lost.append(future)
                    continue
                if future.status != "finished":
                    self._fail(submitted, pipeline, catalog, done_nodes, package_name)
                node = submitted.node_futures.pop(future)
                done_nodes.append(node)
                clock.finished(node.name)
                self._logger.info(
                    "Completed %d out of %d nodes: %s",
                    len(done_nodes),
                    total,
                    node.name,
                )

    def _check_progress(
        self,
        submitted: SubmittedGraph,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        done_nodes: list[Node],
        clock: NodeClock,
    ) -> None:
        """Fails the run if the scheduler went away or a node outran its limit."""
        client = submitted.client
        if client.status != "running":
            self._stop(submitted, pipeline, catalog, done_nodes)
            raise DaskRunError(
                _scheduler_lost(submitted, len(done_nodes), len(pipeline.nodes))
            )
        if reason := self._no_worker_to_come(client, len(done_nodes), pipeline):
            self._stop(submitted, pipeline, catalog, done_nodes)
            raise DaskRunError(reason)
        overdue = clock.overdue()
        if overdue:
            name, seconds, tag = overdue
            self._stop(submitted, pipeline, catalog, done_nodes)
            raise DaskRunError(
                f"Kedro node '{name}' ran longer than {seconds:g} s, the limit "
                f"dask_client.tag_timeouts gives its tag '{tag}', so the run was "
                f"stopped. Raise the limit if the node needs longer. A Dask worker "
                f"cannot interrupt a running node: on a cluster that was already "
                f"running, restart the worker if the node never returns."
            )

    def _no_worker_to_come(
        self, client: distributed.Client, done: int, pipeline: Pipeline
    ) -> str | None:
        """Why the run should stop waiting for a worker: the cluster manager
        failed to start every one it tried, or none has been connected for
        ``no_worker_timeout`` (asked of the scheduler at most once a second)."""
        now = time.monotonic()
        if now - self._workers_checked < _WORKER_CHECK_SECONDS:
            return None
        self._workers_checked = now
        if client.scheduler_info(n_workers=0)["n_workers"]:
            self._workers_last_seen = now
            return None
        if reason := workers_failed_to_start(client):
            return reason
        limit = self._config.no_worker_timeout
        waited = now - self._workers_last_seen
        if limit is None or waited <= limit:
            return None
        return _no_workers(waited, done, len(pipeline.nodes))

    def _stop(
        self,
        submitted: SubmittedGraph,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        done_nodes: list[Node],
    ) -> None:
        """Cancels what has not finished and says how to resume."""
        submitted.cancel()
        self._suggest_resume_scenario(pipeline, done_nodes, catalog)

    def _fail(
        self,
        submitted: SubmittedGraph,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        done_nodes: list[Node],
        package_name: str | None,
    ) -> None:
        """Stops the run and raises the error of the failed node (the first in
        run order: later ones may only have inherited its error)."""
        failed = {
            node: future
            for future, node in submitted.node_futures.items()
            if future.status == "error"
        }
        node = next((node for node in pipeline.nodes if node in failed), None)
        if node is not None:  # read before cancelling, which forgets them
            error = failed[node].exception()
            traceback = failed[node].traceback()
        self._stop(submitted, pipeline, catalog, done_nodes)
        if node is None:
            raise DaskRunError(
                _scheduler_lost(submitted, len(done_nodes), len(pipeline.nodes))
            )
        if missing := _missing_project(error, package_name):
            raise DaskSetupError(
                f"The Dask workers cannot import the project package "
                f"'{package_name}' ({missing}). In dask_client, set "
                f"`upload_project: true` to send its code with the run, or "
                f"`install_wheel: dist/<the wheel kedro package builds>` to "
                f"pip-install it there; or install the project on the workers."
            ) from error
        if isinstance(error, distributed.scheduler.KilledWorker):
            raise DaskRunError(_workers_died(node, error)) from error
        if sys.version_info >= (3, 11):
            error.add_note(f"Raised by Kedro node '{node.name}' on a Dask worker.")
        raise error.with_traceback(traceback)

    def _keep_free_outputs(
        self, submitted: SubmittedGraph, catalog: CatalogProtocol
    ) -> None:
        """Brings the unpersisted pipeline outputs to the driver's catalog, where
        ``run()`` returns them, as Kedro's runners do."""
        names = list(submitted.free_outputs)
        values = submitted.client.gather([submitted.free_outputs[n] for n in names])
        for name, value in zip(names, values):
            catalog.get(name).save(value)

    def _check_resources(
        self, client: distributed.Client, resources: dict[Any, dict[str, float]]
    ) -> None:
        """Refuses a run whose nodes ask for resources no worker has: Dask would
        wait for such a worker forever."""
        wanted = {name for request in resources.values() for name in request}
        if not wanted or self._config.adapt is not None:
            return
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        available = {name for worker in workers for name in worker.get("resources", {})}
        if missing := wanted - available:
            raise DaskSetupError(
                f"Nodes ask for the Dask worker resources {sorted(missing)} through "
                f"dask_client.tag_resources, but no worker of this cluster has them. "
                f"Start workers with e.g. `dask worker ... --resources "
                f'"{sorted(missing)[0]}=1"` (or `resources` in cluster_kwargs).'
            )

    @contextmanager
    def _performance_report(self, client: distributed.Client) -> Iterator[None]:
        """Writes Dask's HTML performance report of the run, when asked to (the
        scheduler holds what goes in it: none if the scheduler went away)."""
        path = self._config.performance_report
        if not path:
            yield
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        report = distributed.performance_report(filename=path)
        with client.as_current():
            report.__enter__()
        try:
            yield
        finally:
            if client.status == "running":
                with client.as_current():
                    report.__exit__(None, None, None)
                self._logger.info("Wrote the Dask performance report to %s", path)


def add_memory_datasets(pipeline: Pipeline, catalog: CatalogProtocol) -> None:
    """Adds to ``catalog`` what Kedro's warm-up in ``AbstractRunner.run`` would:
    a dataset for each of the pipeline's datasets the catalog lacks, made from
    the catalog's runtime pattern (``MemoryDataset`` by default).

    Kedro makes each one from the pattern's config, finding the dataset class
    by trying to import it under several package prefixes: 0.4 ms per dataset,
    a fifth of a 1,000-node run of trivial nodes. Here Kedro makes the first;
    when that is a ``MemoryDataset`` (just made, so empty), every other name
    whose config Kedro resolves to the same gets a copy of it, which is what
    Kedro would make.
    Pipeline inputs are left to Kedro, so that its check that every input is
    in the catalog still fails a run that lacks one.
    """
    if not isinstance(catalog, DataCatalog):
        return
    model: MemoryDataset | None = None
    model_config: dict[str, Any] | None = None
    for name in sorted(pipeline.datasets() - pipeline.inputs()):
        if name in catalog:
            continue
        config = catalog.config_resolver.resolve_pattern(name)
        if model is not None and config == model_config:
            catalog[name] = copy.copy(model)
            continue
        dataset = catalog.get(name, fallback_to_runtime_pattern=True)
        if model is None and type(dataset) is MemoryDataset:
            model, model_config = dataset, config


#: How often the driver checks the scheduler and the time limits; a completion
#: wakes it at once.
_POLL_SECONDS = 0.1


#: How often the driver asks the scheduler whether any worker is connected.
_WORKER_CHECK_SECONDS = 1.0


def _no_workers(waited: float, done: int, total: int) -> str:
    return (
        f"No Dask worker was connected for {waited:.0f} s while {total - done} of "
        f"{total} nodes waited, so the run was stopped and the cluster it started "
        f"closed (which cancels its queued batch jobs). The cluster manager did "
        f"not get workers started: check that cluster_kwargs ask for no more "
        f"than the queue gives (squeue shows why a job is PENDING), look above "
        f"for an error of the cluster manager, or raise "
        f"dask_client.no_worker_timeout (null waits for ever) for a busy queue."
    )


def _following(submitted: SubmittedGraph) -> queue.SimpleQueue[distributed.Future]:
    """A queue that each node future enters once it is no longer pending
    (finished, erred, lost or cancelled).

    The callbacks are registered from the client's event loop: from this thread,
    each one would wake the loop up. Cheaper than ``as_completed``, which starts
    several coroutines per future: at 1,000 nodes that cost a tenth of the run.
    No other reference to the futures: a finished node's in-memory outputs are
    freed as soon as its consumers are done with them.
    """
    completions: queue.SimpleQueue[distributed.Future] = queue.SimpleQueue()

    async def follow(futures: list[distributed.Future]) -> None:
        for future in futures:
            future.add_done_callback(completions.put)

    submitted.client.sync(follow, list(submitted.node_futures))
    return completions


def _next_completions(
    completions: queue.SimpleQueue[distributed.Future],
) -> list[distributed.Future]:
    """The futures completed since the last call; waits up to ``_POLL_SECONDS``
    for the first."""
    try:
        batch = [completions.get(timeout=_POLL_SECONDS)]
    except queue.Empty:
        return []
    while not completions.empty():
        batch.append(completions.get())
    return batch


def _not_lost_any_more(
    lost: list[distributed.Future], completions: queue.SimpleQueue[distributed.Future]
) -> list[distributed.Future]:
    """Takes out of ``lost`` the futures Dask has computed again (returned) or is
    computing again (followed again). A lost future's callback would fire at
    once: it only waits while the future is pending."""
    found = []
    for future in [f for f in lost if f.status != "lost"]:
        lost.remove(future)
        if future.status == "pending":
            future.add_done_callback(completions.put)
        else:
            found.append(future)
    return found


def _scheduler_lost(submitted: SubmittedGraph, done: int, total: int) -> str:
    return (
        f"This run lost its connection to the Dask scheduler at "
        f"{submitted.scheduler_address} after {done} of {total} nodes had "
        f"finished (the scheduler stopped or restarted, or the network failed), "
        f"and Dask forgets a run's tasks with its scheduler. The finished nodes' "
        f"persisted outputs are saved: once the scheduler is back, run the same "
        f"command again with --only-missing-outputs, or with the --from-nodes "
        f"logged above."
    )


def _workers_died(node: Node, error: distributed.scheduler.KilledWorker) -> str:
    # The limit of the last worker that died: by now its replacement may not
    # have joined the scheduler.
    memory_limit = getattr(error.last_worker, "memory_limit", None)
    limit = (
        f"memory_limit {dask.utils.format_bytes(memory_limit)} per worker"
        if memory_limit
        else "no memory_limit"
    )
    return (
        f"Kedro node '{node.name}' was running each time its Dask workers died, so "
        f"Dask gave up on it ({error}). A worker dies like that when it uses more "
        f"memory than it may ({limit} here): give each worker more, with "
        f"dask_client.memory_limit (or cluster_kwargs.memory_limit), fewer "
        f"threads_per_worker so that fewer nodes share it, or make the node use "
        f"less memory. The workers' own logs say why each one stopped."
    )


def _missing_project(
    error: BaseException | None, package_name: str | None
) -> ModuleNotFoundError | None:
    """The failure to import the project package behind ``error``, if that is what
    it is: raised by a worker that unpickles a node, or the cause of the
    RuntimeError of a scheduler that cannot deserialize the task graph."""
    seen = set()
    while error is not None and id(error) not in seen and package_name:
        seen.add(id(error))
        if (
            isinstance(error, ModuleNotFoundError)
            and (error.name or "").split(".")[0] == package_name
        ):
            return error
        error = error.__cause__ or error.__context__
    return None
