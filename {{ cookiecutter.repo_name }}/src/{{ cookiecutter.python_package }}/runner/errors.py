"""Run failures that are not a node's own error; ``cli.py`` prints what to do."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import cloudpickle


class DaskSetupError(RuntimeError):
    """Nothing ran: a bad ``dask_client`` setting, an unreachable scheduler, or
    objects Dask workers cannot receive or see."""


class DaskRunError(RuntimeError):
    """The cluster failed the run under way (scheduler gone, workers dying, a time
    limit); finished nodes' persisted outputs are kept, so the run can resume."""


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and those it was raised from or while handling, each once."""
    links, seen = [error], set()
    while links:
        if (link := links.pop()) is not None and id(link) not in seen:
            seen.add(id(link))
            links += [link.__cause__, link.__context__]
            yield link


def unpicklable(obj: Any) -> str | None:
    """Why Dask cannot send ``obj``, or None: tried as distributed pickles (pickle,
    else cloudpickle), but without the ERROR and traceback it logs for a failure, and
    keeping no bytes: large arrays' buffers are not even copied."""
    with suppress(Exception):
        pickle.Pickler(_Discarded(), -1, buffer_callback=_Discarded.keep).dump(obj)
        return None
    try:
        cloudpickle.CloudPickler(
            _Discarded(), -1, buffer_callback=_Discarded.keep
        ).dump(obj)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class _Discarded:
    """A file that keeps nothing written to it."""

    def write(self, data: Any) -> None:
        pass

    @staticmethod
    def keep(buffer: pickle.PickleBuffer) -> bool:
        return False  # out of band: not copied into the (discarded) stream


def one_line(error: BaseException) -> str:
    """``error`` as ``Type: message`` on one line, for a log line or a run's error."""
    return " ".join(f"{type(error).__name__}: {error}".split())
