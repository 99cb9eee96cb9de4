"""One node the plugin tests steer with ``--params plugin_checks.<key>=...``: it
leaves a marker file when it starts, sleeps, and fails on demand
(tests/plugins writes this file into the project as the pipeline package
``plugin_checks``; with the defaults it does nothing)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kedro.pipeline import Node, Pipeline


class PlannedFailure(ValueError):
    """The failure ``plugin_checks.fail`` asks for."""


def checkpoint(options: dict[str, Any]) -> int:
    if options["marker"]:
        Path(options["marker"]).write_text(str(os.getpid()))
    deadline = time.monotonic() + options["sleep_seconds"]
    while time.monotonic() < deadline:
        time.sleep(0.05)
    if options["fail"]:
        raise PlannedFailure("plugin_checks.fail is set")
    return 1


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                checkpoint,
                inputs="params:plugin_checks",
                outputs="plugin_checks_done",
                name="checkpoint",
            )
        ]
    )
