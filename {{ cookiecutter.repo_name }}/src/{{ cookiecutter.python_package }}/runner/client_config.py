"""The ``dask_client`` block of ``conf/base/parameters.yml``: each key is a field of
``DaskClientConfig``, the names parameters.yml, the README and the errors use."""

from __future__ import annotations

import difflib
import inspect
import math
import tempfile
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import Any, NoReturn

import dask.config
import distributed
import fsspec
from distributed.security import Security

from .errors import DaskSetupError

#: The runner sets these itself; taking them from conf would break the run.
_MANAGED = frozenset({"self", "asynchronous", "loop", "set_as_default", "start"})


def keywords_of(callable_: Callable[..., Any]) -> frozenset[str]:
    """The keywords ``callable_`` names (not its ``**kwargs``), less the runner's."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = inspect.signature(callable_).parameters.values()
    return frozenset(p.name for p in parameters if p.kind in kinds) - _MANAGED


# The old Kedro docs passed the whole block to ``distributed.Client``, which hands
# unknown keywords on to a ``LocalCluster``. Those blocks keep working unchanged.
LOCAL_CLUSTER_KEYWORDS = keywords_of(distributed.LocalCluster)
LOCAL_CLUSTER_KEYWORDS |= {"memory_limit", "resources", "local_directory"}
CLIENT_KEYWORDS = keywords_of(distributed.Client) - {"address", "timeout", "security"}
#: What a LocalCluster's cluster_kwargs may hold: it hands the rest to its workers.
LOCAL_WORKER_KEYWORDS = LOCAL_CLUSTER_KEYWORDS | keywords_of(distributed.Nanny)
LOCAL_WORKER_KEYWORDS |= keywords_of(distributed.Worker)


@dataclass(frozen=True)
class DaskClientConfig:
    """Where a run's nodes execute: with no ``address`` nor ``cluster_class``, on a
    LocalCluster the runner starts and closes. README.md's table says what each key
    does; parameters.yml shows them in use."""

    address: str | None = None
    cluster_class: str | None = None
    cluster_kwargs: dict[str, Any] = field(default_factory=dict)
    adapt: dict[str, Any] | None = None
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float = 30.0
    no_worker_timeout: float | None = 300.0
    security: dict[str, Any] | None = None
    performance_report: str | None = None
    retries: int = 0
    tag_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    tag_timeouts: dict[str, float] = field(default_factory=dict)
    upload_project: bool | None = None
    install_wheel: str | None = None
    install_requirements: bool = False
    check_shared_storage: bool = True

    @classmethod
    def from_options(cls, *layers: Mapping[str, Any]) -> DaskClientConfig:
        """Reads ``dask_client`` blocks (``merged_settings``), validated."""
        settings = merged_settings(*layers)
        if unknown := settings.keys() - SETTINGS:
            known = SETTINGS | LOCAL_CLUSTER_KEYWORDS | CLIENT_KEYWORDS
            raise DaskSetupError(
                f"{unknown_keys('dask_client', unknown, known)} Valid keys: "
                f"{', '.join(sorted(SETTINGS))}, or a keyword of distributed."
                f"LocalCluster ({', '.join(sorted(LOCAL_CLUSTER_KEYWORDS))}) or "
                f"distributed.Client ({', '.join(sorted(CLIENT_KEYWORDS))})."
            )
        config = cls(**settings)
        config.validate()
        return config

    @property
    def starts_cluster(self) -> bool:
        return bool(self.cluster_class or self.cluster_kwargs or self.adapt)

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in fields(self):
            _check_type(item.name, getattr(self, item.name), hints[item.name])
        seconds = "a positive number of seconds"
        if not 0 < self.timeout < math.inf:
            _refuse("timeout", seconds, self.timeout)
        if self.no_worker_timeout is not None and self.no_worker_timeout <= 0:
            forever = f"{seconds} or null (wait for ever)"
            _refuse("no_worker_timeout", forever, self.no_worker_timeout)
        if self.retries < 0:
            _refuse("retries", "a whole number >= 0", self.retries)
        for tag, limit in self.tag_timeouts.items():
            if limit <= 0:
                _refuse(f"tag_timeouts.{tag}", seconds, limit)
        self._check_keywords()
        self._check_adapt()
        if self.address and self.starts_cluster:
            names = ("cluster_class", "cluster_kwargs", "adapt")
            given = ", ".join(n for n in names if getattr(self, n))
            raise DaskSetupError(
                f"dask_client sets both `address` and {given} (n_workers and other "
                f"LocalCluster keywords are cluster_kwargs). Keep one of the two."
            )
        self._check_wheel()
        self._check_report()
        self.security_object()

    def _check_keywords(self) -> None:
        for keyword in _MANAGED & {*self.cluster_kwargs, *self.client_kwargs}:
            raise DaskSetupError(
                f"dask_client cannot set `{keyword}`: the runner manages it."
            )
        checks = [("client_kwargs", CLIENT_KEYWORDS, "distributed.Client")]
        if self.cluster_class in (None, "distributed.LocalCluster"):
            takers = "distributed.LocalCluster or its workers"
            checks.append(("cluster_kwargs", LOCAL_WORKER_KEYWORDS, takers))
            processes = self.cluster_kwargs.get("processes", False)
            if not isinstance(processes, bool):  # "yes" would be taken as true
                _refuse("processes", "true or false", processes)
            memory = self.cluster_kwargs.get("memory_limit")
            if str(memory).lstrip().startswith("-"):  # Dask would take it as a size
                _refuse("memory_limit", "a size such as 4GB, or 0 for none", memory)
        for name, known, taker in checks:
            if unknown := getattr(self, name).keys() - known:
                raise DaskSetupError(
                    f"{unknown_keys(f'dask_client.{name}', unknown, known)} The "
                    f"runner passes this block to {taker}."
                )

    def _check_adapt(self) -> None:
        """Dask would retry a bad value, logging a traceback every second."""
        adapt = self.adapt or {}
        for key in ("minimum", "maximum"):
            if key in adapt and not (isinstance(adapt[key], Real) and adapt[key] >= 0):
                _refuse(f"adapt.{key}", "a number of workers >= 0", adapt[key])
        if adapt.get("minimum", 0) > adapt.get("maximum", math.inf):
            _refuse("adapt.maximum", "at least adapt.minimum", adapt["maximum"])

    def _check_wheel(self) -> None:
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
                "each puts the project on the cluster. Keep one of the two."
            )
        wheel = Path(self.install_wheel)
        if wheel.suffix != ".whl" or not wheel.is_file():
            raise DaskSetupError(
                f"dask_client.install_wheel {self.install_wheel!r} is not a wheel file "
                f"(from {Path.cwd()}). Run `kedro package` and give the wheel in dist/."
            )

    def _check_report(self) -> None:
        """Dask writes the report as the run ends, with fsspec (URLs, ``~``): a path
        it cannot take fails now."""
        if not (given := self.performance_report):
            return
        path = Path(given).expanduser()
        try:
            if "://" in given:  # a URL: its file system's package must be installed
                fsspec.core.url_to_fs(given)
                problem = None
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=path.parent).close()
                problem = "it is a folder" if path.is_dir() else None
        except (OSError, ImportError, ValueError) as exc:
            problem = getattr(exc, "strerror", None) or str(exc)
        if problem:
            raise DaskSetupError(
                f"dask_client.performance_report {given!r} cannot be written "
                f"({problem}). Give an HTML file in a folder you can write to."
            )

    def check_tags(self, tags: Collection[str]) -> None:
        """Refuses a tag no node has (a typo): its limit or resources would not apply."""
        for name in ("tag_timeouts", "tag_resources"):
            for tag in sorted(getattr(self, name).keys() - set(tags)):
                close = difflib.get_close_matches(tag, sorted(tags), n=1)
                raise DaskSetupError(
                    f"dask_client.{name}.{tag}: no node of the project has the tag "
                    f"{tag!r}{f' (did you mean {close[0]}?)' if close else ''}, so "
                    f"this setting would never apply."
                )

    def security_object(self) -> Security | None:
        if self.security is None:
            return None
        # distributed reads the files as it connects, naming none that is missing.
        if missing := [
            f"{key} {value!r}"
            for key, value in self.security.items()
            if key.endswith(("_file", "_cert", "_key"))
            and isinstance(value, str)
            and "-----BEGIN" not in value  # the file's contents given inline
            and not Path(value).is_file()
        ]:
            raise DaskSetupError(
                f"dask_client.security: no such file (from {Path.cwd()}): "
                f"{', '.join(missing)}. Give the paths of the TLS files."
            )
        try:
            return Security(**{"require_encryption": True, **self.security})
        except (TypeError, ValueError) as exc:
            raise DaskSetupError(
                f"dask_client.security is not valid: {exc}. Use distributed.Security's "
                f"keywords, e.g. tls_ca_file, tls_client_cert, tls_client_key."
            ) from exc


#: The keys of the dask_client block that are the runner's own.
SETTINGS = frozenset(item.name for item in fields(DaskClientConfig))


_WORDS = {dict: "a mapping", float: "a number", int: "a whole number", str: "a string"}
_WORDS.update({type(None): "null", bool: "true or false"})


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Refuses a value (or a mapping's item) YAML gave of another type than ``hint``."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if Any in kinds:
        return
    origins = {typing.get_origin(kind) or kind: kind for kind in kinds}
    checked = tuple({float: Real, dict: Mapping}.get(kind, kind) for kind in origins)
    if not isinstance(value, checked) or (  # YAML's true is no number
        isinstance(value, bool) and bool not in origins
    ):
        _refuse(name, " or ".join(_WORDS[kind] for kind in origins), value)
    if isinstance(value, Mapping):
        item_hint = typing.get_args(origins[dict])[1]
        for key, item in value.items():
            _check_type(f"{name}.{key}", item, item_hint)


def merged_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """``dask_client`` blocks as one, each layer's keys winning over those before it
    (``--runner-params`` over parameters.yml), old-docs form included."""
    settings: dict[str, Any] = {}
    for layer in layers:
        settings = dask.config.merge(settings, _nested(layer))
    return settings


def _nested(options: Mapping[str, Any]) -> dict[str, Any]:
    """The old docs' top-level LocalCluster and Client keywords moved into
    cluster_kwargs and client_kwargs, where they lose to the block's own."""
    settings = dict(options)
    for name, keywords in (
        ("cluster_kwargs", LOCAL_CLUSTER_KEYWORDS),
        ("client_kwargs", CLIENT_KEYWORDS),
    ):
        taken = keywords - SETTINGS
        given = {k: settings.pop(k) for k in list(settings) if k in taken}
        explicit = settings.get(name, {})
        if given and isinstance(explicit, Mapping):
            settings[name] = {**given, **explicit}
    return settings


def project_settings(block: Any) -> Mapping[str, Any]:
    """The ``dask_client`` parameters: none, or ``key: value`` settings."""
    if block is None or isinstance(block, Mapping):
        return block or {}
    raise DaskSetupError(
        f"dask_client in parameters.yml must hold `key: value` settings, got a "
        f"{type(block).__name__}: {block!r}. See the README for the settings."
    )


def unknown_keys(where: str, unknown: Iterable[str], known: Iterable[str]) -> str:
    """Names each unknown key, with the known one it is likely a typo of."""
    named = []
    for key in sorted(unknown):
        if key in SETTINGS:
            named.append(f"{key} (set dask_client.{key} instead)")
        elif close := difflib.get_close_matches(key, sorted(known), n=1):
            named.append(f"{key} (did you mean {close[0]}?)")
        else:
            named.append(key)
    return f"Unknown key(s) in {where}: {', '.join(named)}."


def _refuse(name: str, expected: str, value: Any) -> NoReturn:
    raise DaskSetupError(f"dask_client.{name} must be {expected}, got {value!r}.")
