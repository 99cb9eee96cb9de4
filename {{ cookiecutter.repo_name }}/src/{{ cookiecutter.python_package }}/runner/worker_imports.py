"""Imported once by the process that a LocalCluster's worker processes fork from
(Python's forkserver), so that every worker starts with this project's pipelines,
the libraries their nodes use and the installed Kedro plugins already imported.

``DaskRunner`` starts that process when it is created, while Kedro is still
loading the project, so the imports run on another core meanwhile (see
``local_cluster.start_worker_forkserver``). Without this, each worker imports them when
its first node arrives, and prints what they warn about as they are imported
once per worker (the driver, which imports them too, has shown it already). A
module that fails to import here is left alone: the worker that needs it imports
it again and reports the error with the node.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import pkgutil

from .worker_hooks import import_warnings_silenced


def _import_pipelines_and_plugins(package: str) -> None:
    """Imports ``<package>.pipelines.<name>`` for each pipeline, as Kedro's
    ``find_pipelines`` does in the driver, and the plugins' hooks."""
    with contextlib.suppress(Exception):
        pipelines = importlib.import_module(f"{package}.pipelines")
        for module in pkgutil.iter_modules(pipelines.__path__):
            with contextlib.suppress(Exception):
                importlib.import_module(f"{pipelines.__name__}.{module.name}")
    for entry_point in importlib.metadata.entry_points(group="kedro.hooks"):
        with contextlib.suppress(Exception):
            entry_point.load()


with import_warnings_silenced():
    _import_pipelines_and_plugins(__name__.split(".")[0])
