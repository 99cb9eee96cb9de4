"""Private Kedro names the project imports, and why: ``nox -s kedro_versions`` tests the
oldest and newest Kedro. Also used: ``Node._copy``, ``_suggest_resume_scenario``,
``DataCatalog._datasets``, ``_lazy_datasets`` and ``_validator_specs``, datasets' ``_data``,
``_copy_mode``, ``_init_args``, ``_filepath``, ``_fs``, ``_get_versioned_path``,
``_exists_function`` and kedro-datasets' partitioned datasets' ``_list_partitions``."""

from __future__ import annotations

from typing import Any

from kedro.config import AbstractConfigLoader

# `kedro run`'s reading of --async and --runner-params (cli.py); new in Kedro 1.6.0.
from kedro.framework.cli.project import _resolve_runner_kwargs

# Hook managers for workers' plugin copies and tests; _NullPluginManager fires none.
from kedro.framework.hooks.manager import (
    _create_hook_manager,
    _NullPluginManager,
    _register_hooks,
)
from kedro.framework.session import KedroSession
from kedro.framework.session.abstract_session import AbstractSession

# MemoryDataset's copying, to copy data passed as futures as SequentialRunner does.
from kedro.io.memory_dataset import _copy_with_mode, _infer_copy_mode


def config_loader(
    session: AbstractSession, runtime_params: dict[str, Any] | None = None
) -> AbstractConfigLoader:
    """Not ``session.load_context()``: that fires after_context_created, which
    ``session.run()`` fires again. A KedroServiceSession gets --params with each run."""
    if isinstance(session, KedroSession):
        return session._get_config_loader()
    return session._get_config_loader(runtime_params)  # type: ignore[attr-defined]


def validator_specs(catalog: Any) -> dict[str, Any]:
    """The catalog's ``validator:`` declarations, for the workers' own catalogs to
    apply; none where validation is off, or for a catalog class without them."""
    enabled = getattr(catalog, "_is_validation_enabled", None)
    return dict(catalog.validator_specs) if enabled and enabled() else {}


__all__ = [
    "_NullPluginManager",
    "_copy_with_mode",
    "_create_hook_manager",
    "_infer_copy_mode",
    "_register_hooks",
    "_resolve_runner_kwargs",
    "config_loader",
    "validator_specs",
]
