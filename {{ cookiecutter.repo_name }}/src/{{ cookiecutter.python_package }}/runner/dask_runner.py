"""``DaskRunner`` runs a Kedro pipeline on a Dask cluster, one Dask task per node. Its
keywords are the keys of the ``dask_client`` block of ``parameters.yml`` (README)."""

from __future__ import annotations

import copy
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import distributed
import kedro.framework.project as kedro_project
from kedro.io import CatalogProtocol, DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import AbstractRunner
from pluggy import PluginManager

from .builds import this_process
from .client_config import DaskClientConfig, project_settings
from .cluster import (
    credentials_in_the_clear,
    dask_client,
    prepare_local_cluster,
    where_workers_run,
)
from .errors import DaskRunError, NodeExited
from .interrupts import CtrlCHeldBack
from .kedro_internals import validator_specs
from .log_forwarding import (
    driver_logging,
    failures_unlogged,
    forward_node_logs,
)
from .node_task import RunContext
from .project_on_cluster import (
    build_running,
    check_workers_import,
    code_modules,
    project_build,
    project_missing_on_scheduler,
)
from .recomputed_nodes import MarkRecomputed
from .run_setup import workers_prepared
from .shared_storage import SharedStorage
from .task_graph import SubmittedGraph, TaskGraph, check_resources
from .time_limits import NodeClock
from .worker_hooks import datasets_for_hooks, environment_at_start, worker_hooks
from .worker_watch import WorkerWatch, workers_died

#: How often the waiting driver checks scheduler, workers and time limits.
_POLL_SECONDS = 0.1


class DaskRunner(AbstractRunner):
    """Runs each node as a Dask task on the cluster ``dask_client`` describes:
    datasets load and save on the workers, in-memory ones stay there as futures,
    and node and dataset hooks fire there (pipeline hooks on the driver)."""

    def __init__(self, is_async: bool = False, **dask_client: Any) -> None:
        """Checks the settings now, so a bad one fails before anything starts, and
        starts a LocalCluster's fork server while Kedro loads the project."""
        super().__init__(is_async=is_async)
        self._options = dask_client
        self._config = DaskClientConfig.from_options(dask_client)
        environment_at_start()  # before a LocalCluster's fork server starts
        prepare_local_cluster(self._config)

    def run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
        only_missing_outputs: bool = False,
    ) -> dict[str, Any]:
        """Bases the keywords on ``params:dask_client`` (``kedro run`` passes only
        ``--runner-params``) and adds the in-memory datasets far cheaper than
        Kedro's warm-up, which still does it with ``only_missing_outputs``."""
        # Not matched by a catch-all dataset pattern, nor a former run's.
        project: Mapping[str, Any] = {}
        if "params:dask_client" in catalog.keys():
            project = project_settings(catalog.get("params:dask_client").load())
        self._config = DaskClientConfig.from_options(project, self._options)
        if self._config.tag_timeouts or self._config.tag_resources:
            self._config.check_tags(_project_tags(pipeline))
        if not only_missing_outputs:
            add_memory_datasets(pipeline, catalog)
        return super().run(
            pipeline, catalog, hook_manager, run_id, only_missing_outputs
        )

    def _get_executor(self, max_workers: int) -> None:
        """Dask schedules the nodes: there is no ``concurrent.futures`` executor."""

    def _run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
    ) -> None:
        if not pipeline.nodes:
            return
        config, token = self._config, uuid.uuid4().hex[:12]
        # Confirmed datasets too: --from-nodes may leave a node confirming one alone.
        confirmed = {name for node in pipeline.nodes for name in node.confirms}
        datasets = {
            name: dataset
            for name in pipeline.datasets() | confirmed
            if (dataset := catalog.get(name)) is not None
        }
        # Once the pipeline's datasets are materialised:
        for_hooks = datasets_for_hooks(catalog, datasets.keys())
        where = where_workers_run(config)
        elsewhere = where == "anywhere"  # workers may lack our files and code
        hooks = None  # workers in this very process fire the driver's plugins
        if where != "this process":
            hooks = worker_hooks(hook_manager)
        storage = None  # the local directories workers must see, if any
        if config.check_shared_storage and elsewhere:
            storage = SharedStorage.of(datasets)
        build = project_build(config, elsewhere)
        run = RunContext(
            token=token,
            run_id=run_id,
            is_async=self._is_async,
            prepared=hooks is not None or storage is not None,
            driver_logging=driver_logging(),
            driver_process=this_process(),
            validators=validator_specs(catalog),
        )
        graph = TaskGraph(pipeline, datasets, run)
        clock = NodeClock(graph.node_keys, config.tag_timeouts)
        held = CtrlCHeldBack()  # Ctrl-C waits while the run's parts close
        with (
            failures_unlogged(token),
            dask_client(config, held) as client,
            forward_node_logs(client, token),
            clock.running(client, token),
            build_running(client, build, token),
            workers_prepared(client, run, (hook_manager, for_hooks), hooks, storage),
        ):
            if elsewhere:  # workers on other machines may lack the run's code
                plugins = hooks.modules if hooks is not None else frozenset()
                modules = code_modules(pipeline, datasets) | plugins
                check_workers_import(client, modules, build)
            if hooks is not None or graph.saves_datasets:  # else nothing to guard
                client.register_plugin(MarkRecomputed())
            if warning := credentials_in_the_clear(for_hooks[0] | datasets, client):
                self._logger.warning(warning)
            resources = graph.resources(config.tag_resources)
            if config.adapt is None:  # no worker may come to have them
                check_resources(client, resources)
            with self._performance_report(client):
                submitted = graph.submit(client, config.retries, resources)
                try:
                    with held.on_the_way_out():  # then Ctrl-C waits for the close
                        _Waiting(self, submitted, pipeline, catalog, clock).wait()
                    # The unpersisted outputs, for run() to return as Kedro's do.
                    for name, value in submitted.gather_free(pipeline).items():
                        catalog.get(name).save(value)
                finally:
                    submitted.cancel()

    @contextmanager
    def _performance_report(self, client: distributed.Client) -> Iterator[None]:
        """Not ``with performance_report``: no report, nor error, if the scheduler
        went."""
        path = self._config.performance_report
        report = distributed.performance_report(filename=path)
        if path:
            with client.as_current():
                report.__enter__()
        try:
            yield
        finally:
            if path and client.status == "running":
                with client.as_current():
                    report.__exit__(None, None, None)
                self._logger.info("Wrote the Dask performance report to %s", path)


class _Waiting:
    """The driver's wait for a run, stopped with Kedro's resume hint by a failed
    node, a lost scheduler, workers that will not come or a node past its limit."""

    def __init__(
        self,
        runner: DaskRunner,
        submitted: SubmittedGraph,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        clock: NodeClock,
    ) -> None:
        self.runner, self.submitted, self.clock = runner, submitted, clock
        self.pipeline, self.catalog = pipeline, catalog
        self.done: list[Node] = []
        self.workers = WorkerWatch(submitted.client, runner._config.no_worker_timeout)

    def wait(self) -> None:
        total, checked = len(self.submitted.node_futures), 0.0
        while self.submitted.node_futures:
            finished = self.submitted.completed(timeout=_POLL_SECONDS)
            if not finished or time.monotonic() - checked >= _POLL_SECONDS:
                if problem := self._problem():
                    self._stop()
                    raise DaskRunError(problem)
                checked = time.monotonic()
            for future in finished:
                if future.status != "finished":
                    self._fail()
                node = self.submitted.node_futures.pop(future)
                self.done.append(node)
                self.clock.finished(node.name)
                self.runner._logger.info(
                    "Completed %d out of %d nodes: %s", len(self.done), total, node.name
                )

    def _problem(self) -> str | None:
        """Why the run cannot go on, if it cannot."""
        if self.submitted.client.status != "running":
            return self._scheduler_lost()
        pending, total = self.submitted.node_futures, len(self.pipeline.nodes)
        return self.workers.none_to_come(pending, total) or self.clock.overdue()

    def _scheduler_lost(self) -> str:
        return (
            f"This run lost its connection to the Dask scheduler at "
            f"{self.submitted.scheduler_address} after {len(self.done)} of "
            f"{len(self.pipeline.nodes)} nodes had finished. Once the scheduler is "
            f"back, resume with the --from-nodes Kedro suggests above: "
            f"--only-missing-outputs would keep what a node stopped mid-save left."
        )

    def _stop(self) -> None:
        self.submitted.cancel()
        self.runner._suggest_resume_scenario(self.pipeline, self.done, self.catalog)

    def _fail(self) -> None:
        """Raises the first failed node's error in run order (later ones may only
        have inherited it)."""
        failed = {
            n: f for f, n in self.submitted.node_futures.items() if f.status == "error"
        }
        node = next((node for node in self.pipeline.nodes if node in failed), None)
        if node is not None:  # read before cancelling, which forgets them
            error, traceback = failed[node].exception(), failed[node].traceback()
        self._stop()
        if node is None:
            raise DaskRunError(self._scheduler_lost())
        if setup_error := project_missing_on_scheduler(error):
            raise setup_error from error
        if isinstance(error, NodeExited):  # SystemExit, KeyboardInterrupt: made anew,
            exited = error.args[0]  # as Dask's unpickling drops SystemExit.code
            raise type(exited)(*exited.args)
        if isinstance(error, distributed.scheduler.KilledWorker):
            raise DaskRunError(workers_died(node.name, error)) from error
        if sys.version_info >= (3, 11):
            error.add_note(f"Raised by Kedro node '{node.name}' on a Dask worker.")
        raise error.with_traceback(traceback)


def _project_tags(pipeline: Pipeline) -> set[str]:
    """Of the run's nodes and every registered pipeline's: a tag none of them has is
    not one ``--tags`` or ``--pipeline`` left out."""
    pipelines = [pipeline, *kedro_project.pipelines.values()]
    return {tag for each in pipelines for node in each.nodes for tag in node.tags}


def add_memory_datasets(pipeline: Pipeline, catalog: CatalogProtocol) -> None:
    """Kedro's warm-up in ``AbstractRunner.run``, cheaply: names no catalog pattern
    matches get copies of the ``MemoryDataset`` their runtime pattern (``{default}``)
    made first, instead of a slow lookup each. Inputs
    are left to Kedro, whose check for a missing one must still fail the run."""
    if not isinstance(catalog, DataCatalog):
        return
    models: dict[str, MemoryDataset] = {}  # by runtime pattern
    for name in sorted(pipeline.datasets() - pipeline.inputs()):
        if name in catalog:  # registered, or matched by a catalog pattern
            continue
        pattern = catalog.config_resolver.match_runtime_pattern(name)
        if pattern in models:
            catalog[name] = copy.copy(models[pattern])
            continue
        dataset = catalog.get(name, fallback_to_runtime_pattern=True)
        if type(dataset) is MemoryDataset:
            models[pattern] = dataset
