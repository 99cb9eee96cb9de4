"""Imported once by the process that a LocalCluster's worker processes fork from
(Python's forkserver), so that every worker starts with this project's pipelines,
and the libraries their nodes use, already imported.

``DaskRunner`` starts that process when it is created, while Kedro is still
loading the project, so the imports run on another core meanwhile (see
``cluster.start_worker_forkserver``). Without this, each worker imports them when
its first node arrives. A pipeline that fails to import here is left alone: the
worker that needs it imports it again and reports the error with the node.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil


def _import_pipelines(package: str) -> None:
    """Imports ``<package>.pipelines.<name>`` for each pipeline, as Kedro's
    ``find_pipelines`` does in the driver."""
    try:
        pipelines = importlib.import_module(f"{package}.pipelines")
    except Exception:
        return
    for module in pkgutil.iter_modules(pipelines.__path__):
        with contextlib.suppress(Exception):
            importlib.import_module(f"{pipelines.__name__}.{module.name}")


_import_pipelines(__name__.split(".")[0])
