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

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import distributed
import kedro.framework.project as kedro_project
from kedro.framework.hooks.manager import _NullPluginManager
from kedro.io import CatalogProtocol
from kedro.pipeline import Pipeline
from kedro.runner import AbstractRunner
from pluggy import PluginManager

from .client_config import DaskClientConfig, DaskSetupError
from .cluster import dask_client
from .log_forwarding import driver_logging_levels, forward_node_logs, this_process
from .node_task import RunContext
from .task_graph import SubmittedGraph, TaskGraph


class DaskRunner(AbstractRunner):
    """Runs each node as a Dask task on the cluster ``dask_client`` describes.

    In-memory datasets pass between nodes as Dask futures and stay on the workers;
    persisted datasets are loaded and saved by the node's task on its worker.
    Node and dataset hooks fire on the workers, pipeline hooks on the driver.
    """

    def __init__(self, is_async: bool = False, **dask_client: Any) -> None:
        """Checks the settings now, so a bad one fails before anything starts.

        Args:
            is_async: Load and save each node's datasets with threads.
            **dask_client: The keys of ``DaskClientConfig``, or the keywords of
                ``distributed.LocalCluster`` / ``distributed.Client``.
        """
        super().__init__(is_async=is_async)
        self._config = DaskClientConfig.from_options(dask_client)

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
        run = RunContext(
            token=uuid.uuid4().hex[:12],
            run_id=run_id,
            package_name=kedro_project.PACKAGE_NAME,
            fire_hooks=not isinstance(hook_manager, (_NullPluginManager, type(None))),
            logging_levels=driver_logging_levels(),
            driver_process=this_process(),
        )
        graph = TaskGraph(pipeline, catalog, run, self._is_async)
        with (
            dask_client(self._config, run.package_name) as client,
            forward_node_logs(client, run.token),
            self._performance_report(client),
        ):
            resources = graph.resources(self._config.tag_resources)
            self._check_resources(client, resources)
            submitted = graph.submit(client, self._config.retries, resources)
            try:
                self._wait_for_nodes(submitted, pipeline, catalog, run)
                self._keep_free_outputs(submitted, catalog)
            finally:
                submitted.cancel()

    def _wait_for_nodes(
        self,
        submitted: SubmittedGraph,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        run: RunContext,
    ) -> None:
        """Logs each finished node; on the first failure, stops the run and raises."""
        done_nodes = []
        total = len(submitted.node_futures)
        # No other reference to the futures: a finished node's in-memory outputs
        # are freed as soon as its consumers are done with them.
        completions = distributed.as_completed(
            list(submitted.node_futures), loop=submitted.client.loop
        )
        for future in completions:
            if future.status in ("lost", "pending"):
                # Its worker died after it finished: Dask computes it again.
                completions.add(future)
                continue
            if future.status != "finished":
                self._fail(submitted, pipeline, catalog, done_nodes, run)
            node = submitted.node_futures.pop(future)
            done_nodes.append(node)
            self._logger.info(
                "Completed %d out of %d nodes: %s", len(done_nodes), total, node.name
            )

    def _fail(
        self,
        submitted: SubmittedGraph,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        done_nodes: list,
        run: RunContext,
    ) -> None:
        """Cancels what has not run, suggests how to resume, and raises the error
        of the failed node (the first in run order: later ones may only have
        inherited its error)."""
        failed = {
            node: future
            for future, node in submitted.node_futures.items()
            if future.status == "error"
        }
        node = next((node for node in pipeline.nodes if node in failed), None)
        if node is not None:  # read before cancelling, which forgets them
            error = failed[node].exception()
            traceback = failed[node].traceback()
        submitted.cancel()
        self._suggest_resume_scenario(pipeline, done_nodes, catalog)
        if node is None:
            raise RuntimeError(
                "Dask dropped nodes of this run before they finished (the scheduler "
                "restarted, or this client lost its connection to it). Nothing that "
                "did not finish was reported as done; run again to resume."
            )
        if missing := _missing_project(error, run.package_name):
            raise DaskSetupError(
                f"The Dask workers cannot import the project package "
                f"'{run.package_name}' ({missing}). Set `upload_project: true` in "
                f"dask_client to send it with the run, or install the project "
                f"on the workers."
            ) from error
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
        """Writes Dask's HTML performance report of the run, when asked to."""
        path = self._config.performance_report
        if not path:
            yield
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with client.as_current(), distributed.performance_report(filename=path):
            yield
        self._logger.info("Wrote the Dask performance report to %s", path)


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
