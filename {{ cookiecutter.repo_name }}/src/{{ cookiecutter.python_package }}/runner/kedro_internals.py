"""Every private Kedro API this project uses, in one place, with why.

Kedro may change these in any release, so the rest of the project imports them
from here only, and the template is tested against the oldest and the newest
Kedro it supports (``nox -s kedro_versions``). They are the same from Kedro 1.6.0
to 1.7.0; 1.6.0 is the oldest with ``_resolve_runner_kwargs`` and the built-in
``--runner-params`` option it serves, which ``cli.py`` shares.
"""

from __future__ import annotations

from kedro.config import AbstractConfigLoader
from kedro.framework.cli.project import _resolve_runner_kwargs
from kedro.framework.hooks.manager import (
    _create_hook_manager,
    _NullPluginManager,
    _register_hooks,
)
from kedro.framework.session import KedroSession
from kedro.io.memory_dataset import _infer_copy_mode

# What each is for:
# - _resolve_runner_kwargs: `kedro run`'s own reading of --async and
#   --runner-params, so `cli.py` builds runner keywords exactly as Kedro does.
# - _create_hook_manager: a worker process builds a hook manager with Kedro's
#   hook specifications for its copies of the driver's plugins (worker_hooks);
#   Kedro has no public factory for it. _register_hooks: the project's tests
#   build the driver's manager as a KedroSession does.
# - Node._copy: a node recomputed after its worker was lost runs without its
#   `confirms` (run_setup, node_task): they happened when it first ran.
# - _NullPluginManager: the manager Kedro passes when no hooks should fire; the
#   runner checks for it so as not to fire hooks for a run without them.
# - _infer_copy_mode: MemoryDataset's own choice of copy mode, so that data
#   passed between nodes as Dask futures is copied as under SequentialRunner.
# - KedroSession._get_config_loader (see ``config_loader``).
# - AbstractRunner._suggest_resume_scenario, called by DaskRunner: Kedro's
#   `--from-nodes` resume hint for a failed run. (``_run`` and ``_get_executor``
#   are the hooks AbstractRunner asks subclasses to implement.)


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
