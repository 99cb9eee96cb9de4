"""Runners for this project: ``kedro run --runner={{ cookiecutter.python_package }}.runner.DaskRunner``."""

import logging

# Importing distributed sets its loggers to INFO: keep the level that Kedro's
# logging configuration (conf/logging.yml) gave them before.
_configured_level = logging.getLogger("distributed").level

from .client_config import DaskClientConfig, DaskRunError, DaskSetupError  # noqa: E402
from .dask_runner import DaskRunner  # noqa: E402

if _configured_level != logging.NOTSET:
    logging.getLogger("distributed").setLevel(_configured_level)

__all__ = ["DaskClientConfig", "DaskRunError", "DaskRunner", "DaskSetupError"]
