"""Runners for this project: ``kedro run --runner={{ cookiecutter.python_package }}.runner.DaskRunner``."""

from .client_config import DaskClientConfig, DaskSetupError
from .dask_runner import DaskRunner

__all__ = ["DaskClientConfig", "DaskRunner", "DaskSetupError"]
