"""Puts the project's code on the scheduler and workers, late joiners too, as builds
(``builds``). Pickled by value (the cluster lacks the project): uses only stdlib,
distributed and ``builds``."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import io
import logging
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import distributed
import kedro.framework.project as kedro_project
from distributed.diagnostics.plugin import SchedulerUploadFile, UploadFile
from kedro.pipeline import Pipeline

from .builds import in_driver_process, this_process, use_build
from .client_config import DaskClientConfig
from .errors import DaskSetupError, error_chain, one_line

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectBuild:
    """The project's code a run has the cluster import, named by its content."""

    package: str
    #: ``<package>-<hash>.zip`` (uploaded), ``<wheel's stem>-<hash>.whl``, or
    #: ``<package>-installed`` (the copy the cluster's processes have installed).
    file: str
    #: The archive to upload, or the wheel's (then ``wheel``: its file name).
    content: bytes = b""
    wheel: str | None = None
    install_requirements: bool = False


def project_build(config: DaskClientConfig, elsewhere: bool) -> ProjectBuild | None:
    """The wheel to install, or else the package to upload: by default only if
    workers may be on other machines (which may then hold earlier runs' uploads)."""
    package = kedro_project.PACKAGE_NAME
    if config.install_wheel:
        wheel = Path(config.install_wheel)
        content = wheel.read_bytes()
        file = f"{_build_name(wheel.stem, content)}.whl"
        requirements = config.install_requirements
        return ProjectBuild(package, file, content, wheel.name, requirements)
    upload = config.upload_project if config.upload_project is not None else elsewhere
    if not package or not (upload or elsewhere):
        return None
    if not upload:  # an earlier run's upload must not shadow it
        return ProjectBuild(package, f"{package}-installed")
    content = _zipped(package)
    return ProjectBuild(package, f"{_build_name(package, content)}.zip", content)


@contextmanager
def build_running(
    client: distributed.Client, build: ProjectBuild | None, token: str
) -> Iterator[None]:
    """Puts the run's build on the cluster (once per cluster) and makes every process
    import it for the run, late joiners too. Refused while a run of another build is
    under way: a process imports one build of a package at a time."""
    if build is None:
        yield
        return
    claim = (build.package, build.file, client.id)
    if other := client.run_on_scheduler(_claim, token, claim):
        raise DaskSetupError(
            f"Another Kedro run is under way on this Dask cluster with other code of "
            f"{build.package} ({other}; this run's is {build.file}). A process "
            f"imports one version of a package at a time, so both runs would run a "
            f"mix of the two. Run once it has finished, or on a cluster of your own."
        )
    name = f"kedro-build-{token}"
    try:
        _put(client, build, name)
        yield
    finally:
        if client.status == "running":
            with suppress(Exception):  # not over the run's own error
                client.unregister_worker_plugin(name)
            with suppress(Exception):
                client.run_on_scheduler(_unclaim, token)


def _put(client: distributed.Client, build: ProjectBuild, name: str) -> None:
    plugins: tuple[Any, ...] = ()
    if build.wheel is not None:
        logger.info("Installing %s on the Dask cluster", build.wheel)
    elif build.content:  # not loaded: ``use_build`` puts it on ``sys.path``
        logger.info("Uploading the %s package to the Dask cluster", build.package)
        with tempfile.TemporaryDirectory() as folder:
            archive = str(Path(folder, build.file))
            Path(archive).write_bytes(build.content)
            plugins = SchedulerUploadFile(archive, False), UploadFile(archive, False)
    use = _UseBuild(build)
    try:
        for plugin in plugins:
            plugin.idempotent = True
            client.register_plugin(plugin, name=Path(build.file).stem)
        client.run_on_scheduler(use.on_scheduler)
        client.register_plugin(use, name=name)
    except Exception as exc:
        if build.wheel is None:
            raise
        raise DaskSetupError(
            f"Could not install {build.wheel} on the Dask cluster: "
            f"{one_line(exc).rstrip('.')}. dask_client.install_wheel needs pip "
            f"and write access to the cluster's Python environment."
        ) from exc


def code_modules(pipeline: Pipeline, datasets: Mapping[str, Any]) -> set[str]:
    """The modules of the nodes' functions and of the datasets' classes."""
    code = [*(node.func for node in pipeline.nodes), *map(type, datasets.values())]
    return {getattr(item, "__module__", None) or "__main__" for item in code}


def check_workers_import(
    client: distributed.Client, modules: Iterable[str], build: ProjectBuild | None
) -> None:
    """Refuses a run whose code a worker cannot import: distributed closes a worker
    that cannot unpickle a task. Skips the ``build``'s package, which a concurrent
    run's same (idempotent, so not awaited) upload may still set up."""
    sent = build.package if build is not None and build.content else None
    # Code of ``__main__`` or unimported modules goes by value; workers import the rest.
    by_reference = sorted(
        name
        for name in set(modules) - {"__main__"}
        if name in sys.modules and name.split(".")[0] != sent
    )
    found = client.run(_not_importable, by_reference, on_error="return")
    if missing := {w: p for w, p in found.items() if isinstance(p, list) and p}:
        raise DaskSetupError(
            f"The Dask workers {', '.join(sorted(missing))} cannot import what the "
            f"run's nodes, datasets and plugins need: "
            f"{'; '.join(missing[min(missing)])}. "
            f"Install the missing packages on the workers; for the project's own "
            f"modules, set dask_client `upload_project: true` or "
            f"`install_wheel: dist/<wheel>`."
        )


def project_missing_on_scheduler(error: BaseException | None) -> DaskSetupError | None:
    """The error for a scheduler that failed to unpickle the task graph (a RuntimeError
    from the project's import error). A node's own import error is the node's, as in
    Kedro, and stays as it is."""
    package = kedro_project.PACKAGE_NAME
    if not package or isinstance(error, ModuleNotFoundError):
        return None
    for link in error_chain(error):
        if isinstance(link, ModuleNotFoundError):
            if (link.name or "").split(".")[0] == package:
                return DaskSetupError(
                    f"The Dask scheduler cannot import the project package "
                    f"'{package}' ({link}). Set dask_client `upload_project: true` "
                    f"or `install_wheel: dist/<wheel>`."
                )
    return None


async def _not_importable(modules: list[str]) -> list[str]:
    """Imports in a thread: a slow import must not hold up the worker's event loop."""

    def problems() -> list[str]:
        found = []
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:
                found.append(f"{module} ({type(exc).__name__}: {exc})")
        return found

    return await asyncio.to_thread(problems)


def _claim(
    token: str, claim: tuple[str, str, str], dask_scheduler: distributed.Scheduler
) -> str | None:
    """On the scheduler (one call at a time): records the run's build, or returns
    another's of the same package, of a run whose client is still connected."""
    claims = vars(dask_scheduler).setdefault("_kedro_dask_builds", {})
    for other, (package, file, client) in list(claims.items()):
        if client not in dask_scheduler.clients:  # its driver went without a word
            del claims[other]
        elif package == claim[0] and file != claim[1]:
            return file
    claims[token] = claim
    return None


def _unclaim(token: str, dask_scheduler: distributed.Scheduler) -> None:
    vars(dask_scheduler).get("_kedro_dask_builds", {}).pop(token, None)


def _build_name(stem: str, content: bytes) -> str:
    return f"{stem}-{hashlib.sha256(content).hexdigest()[:16]}"


def _zipped(package: str) -> bytes:
    """The package's files, with fixed times: the same code, the same archive."""
    folder = Path(importlib.import_module(package).__file__ or "").parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(path.relative_to(folder.parent).as_posix())
                zipped.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


class _UseBuild(distributed.WorkerPlugin):
    """Makes a process import the run's build (``use_build``): one per run, so a
    worker joining later imports the build of the runs under way (one at a time)."""

    def __init__(self, build: ProjectBuild) -> None:
        wheel = build.content if build.wheel else b""
        self.args = build.package, build.file, wheel, build.install_requirements
        self.driver_process = this_process()

    def setup(self, worker: distributed.Worker) -> None:
        self._use(worker.local_directory)

    def on_scheduler(self, dask_scheduler: distributed.Scheduler) -> None:
        self._use(dask_scheduler.local_directory)

    def _use(self, folder: str) -> None:
        if not in_driver_process(self.driver_process):  # the driver runs its files
            use_build(*self.args, folder=folder)


cloudpickle.register_pickle_by_value(sys.modules[__name__])
