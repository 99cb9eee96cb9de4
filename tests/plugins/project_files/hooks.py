"""A plugin of the plugin tests' own, registered in the project's settings.HOOKS
(tests/plugins writes this file into the project as <package>/plugin_hooks.py).

It keeps state across hook specs as plugins do: what ``after_context_created``,
``after_catalog_created`` and ``before_pipeline_run`` saw is read by the node and
dataset hooks, which accumulate what they see in dict and list attributes;
``after_pipeline_run`` (or ``on_pipeline_error``) writes a summary of it all to
``.plugin_tests/summary.json`` in the project. Every runner must give the same
summary: the order of the hooks' calls is left out (lists are sorted).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

#: Said once when the module is imported: a run must print it once, not once
#: per process that imports the project's hooks.
IMPORT_WARNING = "plugin-tests: the project's hooks module was imported"
warnings.warn(IMPORT_WARNING, UserWarning, stacklevel=1)

#: Logged by a node or dataset hook that lacks the run-level state.
MISSING_STATE = "plugin-tests: {hook} without the state of {missing}"

SUMMARY = Path(".plugin_tests") / "summary.json"


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a parameter value."""
    return json.loads(json.dumps(value, default=repr))


class RecordingHooks:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.nodes: dict[str, dict[str, Any]] = {}
        self.loaded: list[str] = []
        self.saved: list[str] = []
        self.problems: list[str] = []

    # --- run-level state, set on the driver -----------------------------------

    @hook_impl
    def after_context_created(self, context) -> None:
        self.summary_path = Path(context.project_path) / SUMMARY
        self.env = context.env

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self.catalog_names = frozenset(catalog.keys())

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline) -> None:
        self.pipeline_nodes = frozenset(node.name for node in pipeline.nodes)
        self.pipeline_names = run_params.get("pipeline_names")

    def _has_state(self, hook: str) -> bool:
        missing = [
            name
            for name in ("summary_path", "catalog_names", "pipeline_nodes")
            if not hasattr(self, name)
        ]
        if missing:
            problem = MISSING_STATE.format(hook=hook, missing=", ".join(missing))
            logger.warning(problem)
            self.problems.append(problem)
        return not missing

    # --- node and dataset hooks: read the state, accumulate -------------------

    @hook_impl
    def before_node_run(self, node) -> None:
        if self._has_state(f"before_node_run({node.name})"):
            self.started.append(node.name)

    @hook_impl
    def after_node_run(self, node, inputs: dict[str, Any], outputs: dict) -> None:
        if not self._has_state(f"after_node_run({node.name})"):
            return
        self.nodes[node.name] = {
            "in the pipeline": node.name in self.pipeline_nodes,
            "inputs": sorted(inputs),
            "catalog entries among its inputs": sorted(
                name for name in inputs if name in self.catalog_names
            ),
            "parameters": {
                name: _plain(value)
                for name, value in sorted(inputs.items())
                if name.startswith("params:")
            },
            "outputs": sorted(outputs),
        }

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str, node) -> None:
        if self._has_state(f"before_dataset_loaded({dataset_name})"):
            self.loaded.append(f"{dataset_name} -> {node.name}")

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node) -> None:
        if self._has_state(f"after_dataset_saved({dataset_name})"):
            entry = "an entry" if dataset_name in self.catalog_names else "no entry"
            self.saved.append(f"{node.name} -> {dataset_name} ({entry})")

    # --- the summary, on the driver -------------------------------------------

    def _write(self, **extra: Any) -> None:
        summary = {
            "env": self.env,
            "pipeline_names": self.pipeline_names,
            "pipeline nodes": len(self.pipeline_nodes),
            "catalog entries": len(self.catalog_names),
            "nodes started": sorted(self.started),
            "nodes": dict(sorted(self.nodes.items())),
            "loads": sorted(self.loaded),
            "saves": sorted(self.saved),
            "problems": sorted(self.problems),
            **extra,
        }
        self.summary_path.parent.mkdir(parents=True, exist_ok=True)
        self.summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True))

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._write(outcome="completed")

    @hook_impl
    def on_pipeline_error(self, error: Exception) -> None:
        self._write(outcome=f"failed: {type(error).__name__}")
