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
from kedro.framework.session.abstract_session import AbstractSession
from kedro.runner import AbstractRunner
from kedro.utils import load_obj

from .runner import DaskRunError, DaskRunner, DaskSetupError
from .runner.client_config import merged_settings, project_settings
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
    # As in Kedro's own `kedro run`: a KedroSession takes --params as it is
    # created, a KedroServiceSession with each run.
    per_run: dict[str, Any] = {"runtime_params": params}
    created: dict[str, Any] = {}
    if issubclass(settings.SESSION_CLASS, KedroSession):
        per_run, created = created, per_run
    try:
        with settings.SESSION_CLASS.create(
            env=env, conf_source=conf_source, **created
        ) as session:
            return session.run(  # type: ignore[no-any-return]
                runner=_instantiate_runner(
                    runner, is_async, runner_params, session, params
                ),
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
                **per_run,
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
    session: AbstractSession,
    params: dict[str, Any] | None = None,
) -> AbstractRunner:
    """Builds the runner named by ``--runner``.

    A ``DaskRunner`` gets the ``dask_client`` parameters (after ``--env`` and
    ``--params``), overridden key by key by ``--runner-params``; other runners get
    only ``--runner-params``, as with Kedro's own ``kedro run``. ``params`` are
    the run's ``--params`` (a KedroSession already holds them).
    """
    runner_class = load_obj(runner or "SequentialRunner", "kedro.runner")
    runner_kwargs = _resolve_runner_kwargs(is_async, runner_params)
    if isinstance(runner_class, type) and issubclass(runner_class, DaskRunner):
        parameters = config_loader(session, params)["parameters"]
        project = project_settings(parameters.get("dask_client"))
        runner_kwargs = merged_settings(project, runner_kwargs)
    return runner_class(**runner_kwargs)  # type: ignore[no-any-return]
