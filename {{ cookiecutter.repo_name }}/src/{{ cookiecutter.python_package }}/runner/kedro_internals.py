"""Every private Kedro API this project uses, in one place, with why.

Kedro may change these in any release, so the rest of the project imports them
from here only, and the template is tested against the oldest and the newest
Kedro it supports (``nox -s kedro_versions``). They are the same from Kedro 1.6.0
to 1.7.0. Also used, as methods: ``Node._copy`` (a node recomputed after its
worker was lost runs without its ``confirms``) and
``AbstractRunner._suggest_resume_scenario`` (Kedro's ``--from-nodes`` hint).
"""

from __future__ import annotations

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

# MemoryDataset's own choice of copy mode, so that data passed between nodes as
# Dask futures is copied as under SequentialRunner.
from kedro.io.memory_dataset import _infer_copy_mode


def config_loader(session: KedroSession) -> AbstractConfigLoader:
    """The session's config loader: reading the ``dask_client`` parameters through
    ``session.load_context()`` would fire the after_context_created hook, which
    ``session.run()`` fires again."""
    return session._get_config_loader()


__all__ = [
    "_NullPluginManager",
    "_create_hook_manager",
    "_infer_copy_mode",
    "_register_hooks",
    "_resolve_runner_kwargs",
    "config_loader",
]
