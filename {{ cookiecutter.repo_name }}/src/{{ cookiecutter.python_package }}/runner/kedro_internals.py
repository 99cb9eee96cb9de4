"""Every private Kedro function this project imports, in one place, with why.

Kedro may change these in any release, so the rest of the project imports them
from here only, and the template is tested against the oldest and the newest
Kedro it supports (``nox -s kedro_versions``). They are the same from Kedro 1.6.0
to 1.7.0. Also used, where they are needed: the methods ``Node._copy`` and
``AbstractRunner._suggest_resume_scenario``, and datasets' private attributes
(``MemoryDataset._data`` and ``_copy_mode``, ``_init_args``, ``_filepath``).
"""

from __future__ import annotations

from typing import Any

from kedro.config import AbstractConfigLoader

# `kedro run`'s own reading of --async and --runner-params (cli.py); Kedro 1.6.0
# is the oldest that has it.
from kedro.framework.cli.project import _resolve_runner_kwargs

# A worker builds a hook manager with Kedro's hook specifications for its copies
# of the driver's plugins; the project's tests register hooks as a session does;
# _NullPluginManager is what Kedro passes when no hook should fire.
from kedro.framework.hooks.manager import (
    _create_hook_manager,
    _NullPluginManager,
    _register_hooks,
)
from kedro.framework.session import KedroSession
from kedro.framework.session.abstract_session import AbstractSession

# MemoryDataset's own choice of copy mode, so that data passed between nodes as
# Dask futures is copied as under SequentialRunner.
from kedro.io.memory_dataset import _infer_copy_mode


def config_loader(
    session: AbstractSession, runtime_params: dict[str, Any] | None = None
) -> AbstractConfigLoader:
    """The session's config loader: reading the ``dask_client`` parameters through
    ``session.load_context()`` would fire the after_context_created hook, which
    ``session.run()`` fires again. A KedroSession holds the run's --params; a
    KedroServiceSession is given them with each run."""
    if isinstance(session, KedroSession):
        return session._get_config_loader()
    return session._get_config_loader(runtime_params)  # type: ignore[attr-defined]


__all__ = [
    "_NullPluginManager",
    "_create_hook_manager",
    "_infer_copy_mode",
    "_register_hooks",
    "_resolve_runner_kwargs",
    "config_loader",
]
