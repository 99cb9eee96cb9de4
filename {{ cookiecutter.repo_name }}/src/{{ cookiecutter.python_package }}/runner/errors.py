"""Run failures that are not a node's own error; ``cli.py`` prints what to do."""

from __future__ import annotations

from collections.abc import Iterator


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
