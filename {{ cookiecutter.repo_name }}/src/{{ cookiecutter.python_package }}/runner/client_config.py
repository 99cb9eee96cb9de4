"""The ``dask_client`` block of ``conf/base/parameters.yml``.

Every key the runner understands is a field of ``DaskClientConfig``; the comments in
``parameters.yml``, the README and the error for an unknown key all use these names.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import Any

import distributed
from distributed.security import Security

from .interrupts import ctrl_c_kept


class DaskSetupError(RuntimeError):
    """The run could not start and no node has run: a bad ``dask_client`` setting,
    an unreachable scheduler, or nodes and datasets that Dask workers cannot receive.
    """


class DaskRunError(RuntimeError):
    """The cluster failed the run under way: the scheduler went away, a node's
    workers kept dying, or a node outran its time limit. Persisted outputs of the
    nodes that finished are kept, so the run can resume."""


# The runner sets these itself; taking them from conf would break the run.
_MANAGED_KEYWORDS = frozenset(
    {"self", "asynchronous", "loop", "set_as_default", "start"}
)


def _keywords(callable_: Callable[..., Any]) -> frozenset[str]:
    named = {
        parameter.name
        for parameter in inspect.signature(callable_).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    return frozenset(named) - _MANAGED_KEYWORDS


# The old Kedro docs passed the whole block to ``distributed.Client``, which hands
# unknown keywords on to a ``LocalCluster``. Those blocks keep working unchanged.
LOCAL_CLUSTER_KEYWORDS = _keywords(distributed.LocalCluster) | {
    "memory_limit",
    "resources",
    "local_directory",
}
CLIENT_KEYWORDS = _keywords(distributed.Client) - {"address", "timeout", "security"}

_GPU_EXAMPLE = "{GPU: 1}"

# Where to find the package that provides a cluster class, for the import error.
_CLUSTER_PACKAGES = {
    "dask_jobqueue": "dask-jobqueue",
    "dask_kubernetes": "dask-kubernetes",
    "dask_gateway": "dask-gateway",
    "dask_cloudprovider": "dask-cloudprovider",
    "dask_yarn": "dask-yarn",
    "dask_mpi": "dask-mpi",
}


@dataclass(frozen=True)
class DaskClientConfig:
    """Where a run's nodes execute, and how.

    With no ``address`` and no ``cluster_class`` the runner starts a
    ``distributed.LocalCluster`` for the run (sized by ``cluster_kwargs`` or the
    top-level LocalCluster keywords such as ``n_workers``) and closes it afterwards.
    """

    #: Scheduler to connect to, e.g. ``tcp://10.0.0.5:8786``. Falls back to Dask's
    #: ``DASK_SCHEDULER_ADDRESS`` when neither this nor ``cluster_class`` is set.
    address: str | None = None
    #: Dotted path of a cluster manager the runner starts and closes, e.g.
    #: ``dask_jobqueue.SLURMCluster`` or ``distributed.LocalCluster``.
    cluster_class: str | None = None
    #: Keyword arguments for ``cluster_class`` (or for the default LocalCluster).
    cluster_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Adaptive scaling of the started cluster, e.g. ``{minimum: 1, maximum: 8}``.
    adapt: dict[str, Any] | None = None
    #: Extra keyword arguments for ``distributed.Client``.
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Seconds to wait for the scheduler before giving up.
    timeout: float = 30.0
    #: Seconds the run waits while nodes are pending and no worker is connected
    #: (batch jobs queued or refused, pods not scheduled) before it fails and
    #: closes the cluster it started; ``null`` waits for ever.
    no_worker_timeout: float | None = 300.0
    #: TLS files, e.g. ``{tls_ca_file: ..., tls_client_cert: ..., tls_client_key: ...}``.
    security: dict[str, Any] | None = None
    #: Write Dask's HTML performance report of the run to this path.
    performance_report: str | None = None
    #: How many times Dask retries a failed node before the run fails.
    retries: int = 0
    #: Dask worker resources a node asks for by tag, e.g. ``{gpu: {GPU: 1}}``.
    tag_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Seconds a node may run, by tag, e.g. ``{slow: 600}``; the run fails naming
    #: a node that takes longer (the smallest limit of its tags applies).
    tag_timeouts: dict[str, float] = field(default_factory=dict)
    #: Send the project's package to the workers. ``None`` means: yes, unless the
    #: runner starts a LocalCluster on this machine or ``install_wheel`` is set.
    upload_project: bool | None = None
    #: The project's wheel (``kedro package`` writes it to ``dist/``) for pip to
    #: install on the scheduler and the workers: for a cluster whose machines lack
    #: the project, instead of ``upload_project``'s copy of the package's code.
    install_wheel: str | None = None
    #: Let pip also install the wheel's missing requirements there (it needs an
    #: index the cluster's machines reach); without it, only the wheel itself.
    install_requirements: bool = False
    #: Before any node runs, check that every worker sees this machine's files
    #: at the paths of the run's local datasets (``shared_storage``); a
    #: LocalCluster the runner starts shares them by nature.
    check_shared_storage: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DaskClientConfig:
        """Reads a ``dask_client`` block, old-docs form included, and validates it."""
        own_keys = {f.name for f in fields(cls)}
        settings: dict[str, Any] = {}
        shorthand_cluster_kwargs: dict[str, Any] = {}
        shorthand_client_kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in options.items():
            if key in own_keys:
                settings[key] = value
            elif key in LOCAL_CLUSTER_KEYWORDS:
                shorthand_cluster_kwargs[key] = value
            elif key in CLIENT_KEYWORDS:
                shorthand_client_kwargs[key] = value
            else:
                unknown.append(key)
        if unknown:
            raise DaskSetupError(_unknown_keys_message(unknown, own_keys))

        for name, shorthand in (
            ("cluster_kwargs", shorthand_cluster_kwargs),
            ("client_kwargs", shorthand_client_kwargs),
        ):
            if shorthand:  # the explicit mapping wins over top-level keywords
                settings[name] = {**shorthand, **_mapping(settings.get(name, {}), name)}
        config = cls(**settings)
        config.validate()
        return config

    @property
    def starts_cluster(self) -> bool:
        """Whether the settings describe a cluster for the runner to start."""
        return bool(self.cluster_class or self.cluster_kwargs or self.adapt)

    def validate(self) -> None:
        """Refuses wrong types and contradictory settings, saying what to change."""
        _check_type(self.address, (str, type(None)), "address")
        _check_type(self.cluster_class, (str, type(None)), "cluster_class")
        _mapping(self.cluster_kwargs, "cluster_kwargs")
        _mapping(self.client_kwargs, "client_kwargs")
        if self.adapt is not None:
            _mapping(self.adapt, "adapt")
        if self.security is not None:
            _mapping(self.security, "security")
        _check_type(self.performance_report, (str, type(None)), "performance_report")
        _check_type(self.upload_project, (bool, type(None)), "upload_project")
        _check_type(self.check_shared_storage, (bool,), "check_shared_storage")
        self._check_wheel()
        if not isinstance(self.timeout, Real) or self.timeout <= 0:
            raise DaskSetupError(
                f"dask_client.timeout must be a positive number of seconds, "
                f"got {self.timeout!r}."
            )
        if self.no_worker_timeout is not None and (
            not isinstance(self.no_worker_timeout, Real) or self.no_worker_timeout <= 0
        ):
            raise DaskSetupError(
                f"dask_client.no_worker_timeout must be a positive number of seconds "
                f"or null (wait for ever), got {self.no_worker_timeout!r}."
            )
        if not isinstance(self.retries, int) or self.retries < 0:
            raise DaskSetupError(
                f"dask_client.retries must be a whole number >= 0, got {self.retries!r}."
            )
        for tag, resources in _mapping(self.tag_resources, "tag_resources").items():
            if not isinstance(resources, Mapping) or not all(
                isinstance(amount, Real) for amount in resources.values()
            ):
                raise DaskSetupError(
                    f"dask_client.tag_resources.{tag} must map resource names to "
                    f"amounts, e.g. `gpu: {_GPU_EXAMPLE}`; got {resources!r}."
                )
        for tag, seconds in _mapping(self.tag_timeouts, "tag_timeouts").items():
            if not isinstance(seconds, Real) or seconds <= 0:
                raise DaskSetupError(
                    f"dask_client.tag_timeouts.{tag} must be a positive number of "
                    f"seconds, e.g. `slow: 600`; got {seconds!r}."
                )
        for keyword in _MANAGED_KEYWORDS & (
            set(self.cluster_kwargs) | set(self.client_kwargs)
        ):
            raise DaskSetupError(
                f"dask_client cannot set `{keyword}`: the runner manages it."
            )
        if self.address and self.starts_cluster:
            given = [
                name
                for name in ("cluster_class", "cluster_kwargs", "adapt")
                if getattr(self, name)
            ]
            raise DaskSetupError(
                f"dask_client sets both `address` and {', '.join(given)}: `address` "
                f"connects to a scheduler that is already running, while "
                f"{', '.join(given)} describe a cluster for the runner to start "
                f"(LocalCluster keywords such as n_workers count as cluster_kwargs). "
                f"Keep one of the two."
            )
        self.security_object()
        self.cluster_factory()

    def _check_wheel(self) -> None:
        _check_type(self.install_wheel, (str, type(None)), "install_wheel")
        _check_type(self.install_requirements, (bool,), "install_requirements")
        if self.install_wheel is None:
            if self.install_requirements:
                raise DaskSetupError(
                    "dask_client.install_requirements needs dask_client.install_wheel: "
                    "the requirements are those of the wheel."
                )
            return
        if self.upload_project:
            raise DaskSetupError(
                "dask_client sets both `upload_project: true` and `install_wheel`: "
                "each puts the project on the cluster (a copy of its package's code, "
                "or its wheel installed with pip). Keep one of the two."
            )
        wheel = Path(self.install_wheel)
        if wheel.suffix != ".whl" or not wheel.is_file():
            raise DaskSetupError(
                f"dask_client.install_wheel {self.install_wheel!r} is not a wheel "
                f"file (from {Path.cwd()}). Run `kedro package`, which writes the "
                f"project's wheel to dist/, and give its path."
            )

    def security_object(self) -> Security | None:
        """The ``distributed.Security`` for the TLS settings, if any."""
        if self.security is None:
            return None
        options = dict(self.security)
        options.setdefault("require_encryption", True)
        try:
            return Security(**options)
        except (TypeError, ValueError) as exc:
            raise DaskSetupError(
                f"dask_client.security is not valid: {exc}. Use the keyword names of "
                f"distributed.Security, e.g. tls_ca_file, tls_client_cert, "
                f"tls_client_key."
            ) from exc

    def cluster_factory(self) -> Callable[..., Any]:
        """What the runner makes its cluster with (LocalCluster by default): a
        class, or a class's method that returns a cluster, such as
        ``dask_gateway.GatewayCluster.from_name``."""
        if not self.cluster_class:
            return distributed.LocalCluster
        if "." not in self.cluster_class:
            raise DaskSetupError(
                f"dask_client.cluster_class must be a dotted path such as "
                f"dask_jobqueue.SLURMCluster, got {self.cluster_class!r}."
            )
        try:
            with ctrl_c_kept():
                return _imported(self.cluster_class)
        except ImportError as exc:
            top_level = self.cluster_class.split(".")[0]
            package = _CLUSTER_PACKAGES.get(top_level, top_level.replace("_", "-"))
            raise DaskSetupError(
                f"dask_client.cluster_class {self.cluster_class!r} cannot be imported "
                f"({exc}). Install its package, e.g. `pip install {package}`, and add "
                f"it to requirements.txt."
            ) from exc
        except AttributeError as exc:
            raise DaskSetupError(
                f"dask_client.cluster_class {self.cluster_class!r}: {exc}."
            ) from None


def _imported(path: str) -> Any:
    """The object at a dotted path: an attribute of a module, or of an
    attribute of one (``package.module.Class.method``)."""
    owner_path, _, name = path.rpartition(".")
    try:
        owner = importlib.import_module(owner_path)
    except ModuleNotFoundError as exc:
        if exc.name != owner_path or "." not in owner_path:
            raise  # a package that is not installed
        owner = _imported(owner_path)
    if not hasattr(owner, name):
        raise AttributeError(f"{owner.__name__!r} has no {name!r}")
    return getattr(owner, name)


def _unknown_keys_message(unknown: list[str], own_keys: set[str]) -> str:
    return (
        f"Unknown key(s) in dask_client: {', '.join(sorted(unknown))}. "
        f"Valid keys are: {', '.join(sorted(own_keys))}; also accepted, as in the "
        f"old Kedro docs, are the keywords of distributed.LocalCluster "
        f"({', '.join(sorted(LOCAL_CLUSTER_KEYWORDS))}) and of distributed.Client "
        f"({', '.join(sorted(CLIENT_KEYWORDS))})."
    )


def _check_type(value: Any, types: tuple[type, ...], name: str) -> None:
    if not isinstance(value, types):
        expected = " or ".join(
            "null" if kind is type(None) else kind.__name__ for kind in types
        )
        raise DaskSetupError(f"dask_client.{name} must be {expected}, got {value!r}.")


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DaskSetupError(
            f"dask_client.{name} must be a mapping of keyword arguments, got {value!r}."
        )
    return value


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` applied key by key, nested mappings too: how
    ``--runner-params`` (and a runner's own keywords) override ``dask_client``."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result
