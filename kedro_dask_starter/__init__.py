"""The ``dask`` alias of ``kedro new --starter``, registered through the
``kedro.starters`` entry point.

The template ships inside this package (the wheel copies it from the repository's
root into ``template/``), so Kedro renders it from a local folder: no clone, and
no ``--checkout`` tag, which Kedro would otherwise set to its own version.
"""

from __future__ import annotations

from pathlib import Path

from kedro.framework.cli.starters import KedroStarterSpec

TEMPLATE = Path(__file__).parent / "template"

starters = [KedroStarterSpec(alias="dask", template_path=str(TEMPLATE))]
