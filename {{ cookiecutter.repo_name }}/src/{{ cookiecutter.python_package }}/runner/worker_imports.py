"""Imported by the forkserver LocalCluster workers fork from, so they start with the
project's pipelines, libraries and Kedro plugins imported, not each re-importing them
with warnings. Failed imports are ignored: the worker needing it reports them."""

import contextlib
import importlib
import importlib.metadata
import pkgutil

from .worker_hooks import import_warnings_silenced

# As Kedro's ``find_pipelines`` does in the driver, plus the plugins' hooks.
with import_warnings_silenced():
    with contextlib.suppress(Exception):
        pipelines = importlib.import_module(f"{__name__.split('.')[0]}.pipelines")
        for module in pkgutil.iter_modules(pipelines.__path__):
            with contextlib.suppress(Exception):
                importlib.import_module(f"{pipelines.__name__}.{module.name}")
    for entry_point in importlib.metadata.entry_points(group="kedro.hooks"):
        with contextlib.suppress(Exception):
            entry_point.load()
