"""A run's state on every worker, late joiners too; removed after the run so leftover
node tasks do not run. Sent by value, unpickled before the project arrives (a failure
stops the worker): the plugin uses only this module and ``shared_storage``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import cloudpickle
import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from .builds import in_driver_process
from .errors import DaskRunError, DaskSetupError, pickled_each
from .log_forwarding import registered, subscribed
from .shared_storage import SharedStorage
from .worker_hooks import HooksOnWorker, driver_hook_managers, merge_additions

if TYPE_CHECKING:
    from .node_task import RunContext
    from .worker_hooks import HookDatasets, SentAdditions, WorkerHooks


@dataclass(eq=False)
class RunSetup(WorkerPlugin):
    #: The driver's plugins with node or dataset hooks, and datasets_for_hooks,
    #: pickled: unpickled by the first node of the run, with the project.
    hooks: tuple[bytes, bytes] | None
    environment: dict[str, str | None]
    storage: SharedStorage | None
    driver_process: str
    #: The copies of the plugins, made by this worker's first node of the run.
    hooks_on_worker: Any = None
    #: Run directories this worker does not see: nodes using them stop the run.
    unseen: list[str] = field(default_factory=list)
    #: What went wrong preparing this worker: its nodes raise it.
    error: BaseException | None = None
    saved: dict[str, str | None] = field(default_factory=dict)

    async def setup(self, worker: distributed.Worker) -> None:
        """Never raises: that would fail the start of a worker that joins later."""
        try:
            if not in_driver_process(self.driver_process):
                self.saved = set_environment(self.environment)
            if self.storage is not None:  # off the event loop: a mount may be slow
                self.unseen = await asyncio.to_thread(self.storage.unseen)
        except Exception as exc:
            self.error = exc

    def teardown(self, worker: distributed.Worker) -> None:
        set_environment(self.saved)


def _name(token: str) -> str:
    return f"kedro-run-{token}"


def set_environment(variables: Mapping[str, str | None]) -> dict[str, str | None]:
    """Sets (``None``: removes) environment variables; returns what they were."""
    saved = {name: os.environ.get(name) for name in variables}
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return saved


def _setup_on(worker: distributed.Worker, token: str) -> RunSetup | None:
    """The run's plugin on ``worker``: an instance of the class as sent by value, not
    of this module's (``isinstance`` would say no)."""
    return cast("RunSetup | None", worker.plugins.get(_name(token)))


def _unseen(token: str, dask_worker: distributed.Worker) -> list[str]:
    setup = _setup_on(dask_worker, token)
    return setup.unseen if setup else []


_copies_lock = threading.Lock()
#: What ``hooks_here`` returns for a node whose hooks do not fire.
_NO_HOOKS: tuple[Any, HookDatasets, AbstractContextManager] = (
    None,
    ({}, {}),
    contextlib.nullcontext(),
)


def hooks_here(
    run: RunContext, datasets: Iterable[str], in_driver: bool
) -> tuple[Any, HookDatasets, AbstractContextManager]:
    """In a node task: the hook manager to fire (None: no hooks), the datasets for its
    catalog, and what to run it in, to send the copies' additions; refuses a node
    using files this worker does not see. Not in the plugin: it runs with the
    project."""
    if in_driver:
        hook_manager, for_hooks = driver_hook_managers.get(run.token, _NO_HOOKS[:2])
        return hook_manager, for_hooks, _NO_HOOKS[2]
    if not run.prepared:
        return _NO_HOOKS
    worker = distributed.get_worker()
    setup = _setup_on(worker, run.token)
    if setup is None:
        raise RuntimeError(
            f"This Dask worker is not prepared for Kedro run {run.token}: the run "
            f"is over, or preparing the worker failed (its log says why)."
        )
    if setup.error is not None:
        raise setup.error
    if setup.unseen and setup.storage is not None and setup.storage.uses(datasets):
        raise DaskRunError(setup.storage.refusal({worker.address: setup.unseen}))
    if setup.hooks is None:
        return _NO_HOOKS
    with _copies_lock:
        if setup.hooks_on_worker is None:
            topic = f"{_name(run.token)}-additions"  # what the copies added
            setup.hooks_on_worker = HooksOnWorker(*setup.hooks, topic)
    copies = setup.hooks_on_worker
    return copies.manager, copies.datasets, copies.additions_sent()


@contextlib.contextmanager
def workers_prepared(
    client: distributed.Client,
    run: RunContext,
    driver_hooks: tuple[Any, HookDatasets],
    hooks: WorkerHooks | None,
    storage: SharedStorage | None,
) -> Iterator[None]:
    """Registers the run's plugin, refusing the run if a worker does not see
    ``storage``; afterwards merges what the plugin copies learnt into the driver's.
    ``driver_hooks``: the hook manager and its ``datasets_for_hooks``."""
    token = run.token
    driver_hook_managers[token] = driver_hooks  # for workers in this process
    hook_manager, for_hooks = driver_hooks
    pickled, environment = None, dict(hooks.environment) if hooks else {}
    if hooks and hooks.plugins:  # now: TaskGraph released what the driver cached
        # One by one: a dataset a worker cannot load is missing there, as in a catalog.
        found, lazy = for_hooks
        pickled = (hooks.plugins, cloudpickle.dumps((pickled_each(found), lazy)))
    # What the workers' copies of the plugins changed, node by node.
    added: list[tuple[float, SentAdditions]] = []
    try:
        with (
            subscribed(client, f"{_name(token)}-additions", added.append),
            storage.marked(token) if storage else contextlib.nullcontext() as marked,
            contextlib.ExitStack() as plugin,
        ):
            if run.prepared:  # restores the workers' environment as it goes
                setup = RunSetup(pickled, environment, marked, run.driver_process)
                plugin.enter_context(registered(client, setup, _name(token)))
            unseen = client.run(_unseen, token) if marked is not None else {}
            if unseen := {w: folders for w, folders in unseen.items() if folders}:
                raise DaskSetupError(marked.refusal(unseen))  # type: ignore[union-attr]
            yield
    finally:
        driver_hook_managers.pop(token, None)
        for _, additions in added:  # sent before each node ended
            merge_additions(hook_manager.get_plugin, additions)


for _module in (sys.modules[__name__], sys.modules[SharedStorage.__module__]):
    cloudpickle.register_pickle_by_value(_module)
