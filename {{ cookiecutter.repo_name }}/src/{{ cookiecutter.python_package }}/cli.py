"""Command line tools for {{ cookiecutter.project_name }}.

``kedro run`` (and ``python -m {{ cookiecutter.python_package }}``) is Kedro's own
``run`` with every one of its options, plus one thing: a ``DaskRunner`` is built
from the ``dask_client`` parameters, so ``conf/`` decides where the pipeline runs.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import click
from kedro import KedroDeprecationWarning
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.project import settings
from kedro.framework.session import KedroSession
from kedro.runner import AbstractRunner
from kedro.utils import load_obj

from .runner import DaskRunError, DaskRunner, DaskSetupError
from .runner.client_config import merged
from .runner.kedro_internals import _resolve_runner_kwargs, config_loader

logger = logging.getLogger(__name__)

# Kedro 1.7 calls omegaconf's deprecated register_new_resolver() each time it
# builds a config loader: four warnings per run about Kedro's code, not yours.
warnings.filterwarnings(
    "ignore",
    message=r"register_new_resolver\(\) is deprecated",
    module=r"kedro\.config\.",
)


@click.group(name="kedro")
def cli() -> None:
    """Command line tools for {{ cookiecutter.project_name }}."""


# Kedro's own options, shared rather than copied, so none can go missing.
@cli.command(params=list(kedro_run.params), help=kedro_run.help)
def run(  # noqa: PLR0913, PLR0917 (one parameter per Kedro option)
    tags: tuple[str, ...],
    env: str | None,
    runner: str | None,
    is_async: bool,
    runner_params: dict[str, Any],
    node_names: tuple[str, ...],
    to_nodes: list[str],
    from_nodes: list[str],
    from_inputs: list[str],
    to_outputs: list[str],
    load_versions: dict[str, str] | None,
    pipeline: str | None,
    pipelines: list[str],
    config: str | None,
    conf_source: str | None,
    params: dict[str, Any],
    namespaces: list[str],
    only_missing_outputs: bool,
) -> dict[str, Any]:
    if pipeline and pipelines:
        raise click.ClickException(
            "Options '--pipeline' and '--pipelines' cannot be used together"
        )
    if pipeline:
        warnings.warn(
            "Option '--pipeline' is deprecated and will be removed in a future "
            "release. Please use '--pipelines' instead.",
            KedroDeprecationWarning,
            stacklevel=1,
        )
    try:
        with settings.SESSION_CLASS.create(
            env=env, conf_source=conf_source, runtime_params=params
        ) as session:
            return session.run(  # type: ignore[no-any-return]
                runner=_instantiate_runner(runner, is_async, runner_params, session),
                tags=tuple(tags),
                node_names=tuple(node_names),
                from_nodes=from_nodes,
                to_nodes=to_nodes,
                from_inputs=from_inputs,
                to_outputs=to_outputs,
                load_versions=load_versions,
                pipeline_names=[pipeline] if pipeline else list(set(pipelines)),
                namespaces=namespaces,
                only_missing_outputs=only_missing_outputs,
            )
    except (DaskSetupError, DaskRunError) as exc:
        # A settings or cluster problem: one paragraph, not a Dask traceback.
        # The traceback is logged at DEBUG (set this package's level in
        # conf/logging.yml to see it).
        logger.debug("The run could not start or finish", exc_info=exc)
        raise click.ClickException(str(exc)) from exc


def _instantiate_runner(
    runner: str | None,
    is_async: bool,
    runner_params: dict[str, Any],
    session: KedroSession,
) -> AbstractRunner:
    """Builds the runner named by ``--runner``.

    A ``DaskRunner`` gets the ``dask_client`` parameters (after ``--env`` and
    ``--params``), overridden key by key by ``--runner-params``; other runners get
    only ``--runner-params``, as with Kedro's own ``kedro run``.
    """
    runner_class = load_obj(runner or "SequentialRunner", "kedro.runner")
    runner_kwargs = _resolve_runner_kwargs(is_async, runner_params)
    if isinstance(runner_class, type) and issubclass(runner_class, DaskRunner):
        parameters = config_loader(session)["parameters"]
        runner_kwargs = merged(parameters.get("dask_client") or {}, runner_kwargs)
    return runner_class(**runner_kwargs)  # type: ignore[no-any-return]
