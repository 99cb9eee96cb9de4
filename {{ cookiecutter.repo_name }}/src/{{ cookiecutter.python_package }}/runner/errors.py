"""Run failures that are not a node's own error; ``cli.py`` prints what to do."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping
from contextlib import suppress
from types import SimpleNamespace
from typing import Any, TypeVar

import cloudpickle


class DaskSetupError(RuntimeError):
    """Nothing ran: a bad ``dask_client`` setting, an unreachable scheduler, or
    objects Dask workers cannot receive or see."""


class DaskRunError(RuntimeError):
    """The cluster failed the run under way (scheduler gone, workers dying, a time
    limit); finished nodes' persisted outputs are kept, so the run can resume."""


class NodeExited(Exception):
    """Carries a node's ``SystemExit`` or ``KeyboardInterrupt``, which would end its
    Dask worker (and the run's retries on others), to the driver, which raises it."""


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and those it was raised from or while handling, each once."""
    links, seen = [error], set()
    while links:
        if (link := links.pop()) is not None and id(link) not in seen:
            seen.add(id(link))
            links += [link.__cause__, link.__context__]
            yield link


#: Pickles into nothing, leaving array buffers out of band: nothing is copied.
_NOWHERE = {
    "file": SimpleNamespace(write=len),
    "protocol": pickle.HIGHEST_PROTOCOL,
    "buffer_callback": lambda _: False,
}


def unpicklable(obj: Any) -> str | None:
    """Why Dask cannot send ``obj``, or None: tried as distributed pickles (pickle,
    else cloudpickle), but without the ERROR and traceback it logs for a failure."""
    with suppress(Exception):
        pickle.Pickler(**_NOWHERE).dump(obj)
        return None
    try:
        cloudpickle.CloudPickler(**_NOWHERE).dump(obj)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


_Key = TypeVar("_Key")


def pickled_each(items: Mapping[_Key, Any]) -> dict[_Key, bytes]:
    """Each value pickled alone, leaving out those that cannot be: one bad value
    (a class defined in a function, a dataset holding a lock) costs only itself."""
    pickled = {}
    for key, value in items.items():
        with suppress(Exception):
            pickled[key] = cloudpickle.dumps(value)
    return pickled


def unpickled_each(pickled: Mapping[_Key, bytes]) -> dict[_Key, Any]:
    """The values of ``pickled_each`` this process can load (it has their packages)."""
    items = {}
    for key, value in pickled.items():
        with suppress(Exception):
            items[key] = cloudpickle.loads(value)
    return items


def one_line(error: BaseException) -> str:
    """``error`` as ``Type: message`` on one line, for a log line or a run's error."""
    return " ".join(f"{type(error).__name__}: {error}".split())
