"""Imported once by the forkserver LocalCluster workers fork from, so each worker starts
with the project's pipelines, their libraries and Kedro plugins imported; otherwise each
imports them on its first node and repeats their import warnings. ``DaskRunner`` starts
it early (``local_cluster.start_worker_forkserver``) to overlap Kedro's project loading.
Failed imports are ignored here: the worker that needs the module reports the error.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import pkgutil

from .worker_hooks import import_warnings_silenced


def _import_pipelines_and_plugins(package: str) -> None:
    """As Kedro's ``find_pipelines`` does in the driver, plus the plugins' hooks."""
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
