"""Runners for this project: ``kedro run --runner={{ cookiecutter.python_package }}.runner.DaskRunner``."""

import logging

# Importing distributed sets its loggers to INFO: keep the level the project's
# logging configuration (conf/logging.yml) gave them, else WARNING, so that
# Dask's messages about its own workings do not drown the run's.
_configured_level = logging.getLogger("distributed").level

from .client_config import DaskClientConfig  # noqa: E402
from .dask_runner import DaskRunner  # noqa: E402
from .errors import DaskRunError, DaskSetupError  # noqa: E402

logging.getLogger("distributed").setLevel(_configured_level or logging.WARNING)

__all__ = ["DaskClientConfig", "DaskRunError", "DaskRunner", "DaskSetupError"]
