"""Ctrl-C while the runner starts or closes a cluster.

A terminal sends Ctrl-C (SIGINT) to every process of its foreground job: the
driver and the worker processes of a LocalCluster. Two things must hold:

- Workers never act on it: the driver alone stops the run, cancels its nodes and
  closes the cluster in order. Worker processes are started with SIGINT blocked,
  which they inherit and keep for their whole life (unlike a handler, a blocked
  signal mask survives ``exec``).
- A press while a cluster starts or closes is not lost, nor does it break the
  start or close half-way (which leaves processes or batch jobs behind): it is
  held back and raised as ``KeyboardInterrupt`` as soon as the cluster has
  started, or has closed. A second press raises at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from types import FrameType, TracebackType
from typing import Any


class CtrlCHeldBack:
    """Holds Ctrl-C back inside ``with``; re-raises a press on the way out.

    Only in the main thread, where Python handles signals; elsewhere it does
    nothing. Threads started inside (such as the cluster's event loop, which
    starts the worker processes) block SIGINT, and so do their processes.
    """

    def __init__(self) -> None:
        self._presses = 0
        self._saved_handler: Any = None
        self._saved_mask: set[signal.Signals] | None = None

    def __enter__(self) -> CtrlCHeldBack:
        if threading.current_thread() is not threading.main_thread():
            return self
        handler = signal.getsignal(signal.SIGINT)
        if handler in (signal.SIG_IGN, None):
            return self  # started with Ctrl-C ignored (nohup): nothing to hold
        # Multiprocessing's resource tracker unblocks SIGINT in the thread that
        # first starts it: start it now, so that no thread of the cluster does.
        resource_tracker.ensure_running()
        self._presses = 0
        self._saved_handler = signal.signal(signal.SIGINT, self._pressed)
        self._saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        mask, self._saved_mask = self._saved_mask, None
        if mask is None:
            return
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._restore_handler()
        if self._presses and exc_type is None:
            raise KeyboardInterrupt

    def _pressed(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread, between two bytecodes of whatever it runs.
        self._presses += 1
        if self._presses > 1:
            self._restore_handler()
            raise KeyboardInterrupt

    def _restore_handler(self) -> None:
        if self._saved_handler is not None:
            signal.signal(signal.SIGINT, self._saved_handler)
            self._saved_handler = None


@contextmanager
def ctrl_c_kept() -> Iterator[None]:
    """Restores the SIGINT handler that was in place before ``with``.

    Importing dask_jobqueue replaces it with ``sys.exit()``: a Ctrl-C then ends
    ``kedro run`` silently with exit status 0, as if the run had succeeded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)
