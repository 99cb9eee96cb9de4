"""Hooks that append one line per call to the file named by $RECORDING_HOOKS_LOG.

Appends of short lines are atomic, so hooks firing in several worker processes
at once write whole lines.
"""

from __future__ import annotations

import os

from kedro.framework.hooks import hook_impl

LOG_VARIABLE = "RECORDING_HOOKS_LOG"


def _record(*fields: str) -> None:
    path = os.environ.get(LOG_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write("\t".join(fields) + "\n")


class RecordingHooks:
    @hook_impl
    def before_node_run(self, node):
        _record("before_node_run", node.name)

    @hook_impl
    def after_node_run(self, node):
        _record("after_node_run", node.name)

    @hook_impl
    def on_node_error(self, node, error):
        _record("on_node_error", node.name, type(error).__name__)

    @hook_impl
    def before_dataset_loaded(self, dataset_name, node):
        _record("before_dataset_loaded", node.name, dataset_name)

    @hook_impl
    def after_dataset_loaded(self, dataset_name, node):
        _record("after_dataset_loaded", node.name, dataset_name)

    @hook_impl
    def before_dataset_saved(self, dataset_name, node):
        _record("before_dataset_saved", node.name, dataset_name)

    @hook_impl
    def after_dataset_saved(self, dataset_name, node):
        _record("after_dataset_saved", node.name, dataset_name)
