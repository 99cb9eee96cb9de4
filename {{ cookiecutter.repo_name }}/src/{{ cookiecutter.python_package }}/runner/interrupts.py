"""Ctrl-C while a cluster starts or closes is held back, not to leave processes or jobs
behind, then raised; a second press raises at once. Workers block SIGINT for life (a
blocked mask survives ``exec``), so the terminal's Ctrl-C stops only the driver."""

from __future__ import annotations

import _imp
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from types import FrameType
from typing import Any


class CtrlCHeldBack:
    """Holds Ctrl-C back in the main thread, raising a press on exit; threads started
    inside (the cluster's event loop) and their processes inherit the blocked SIGINT."""

    _presses = 0
    _saved_handler: Any = None
    _saved_mask: set[signal.Signals] | None = None

    def __enter__(self) -> CtrlCHeldBack:
        if self._saved_mask is not None:  # held already (see on_the_way_out)
            return self
        main = threading.current_thread() is threading.main_thread()
        if not main or not hasattr(signal, "pthread_sigmask"):  # Windows has no masks
            return self
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
            return self  # started with Ctrl-C ignored (nohup): nothing to hold
        # The resource tracker unblocks SIGINT in the thread that first starts it.
        resource_tracker.ensure_running()
        self._presses = 0
        self._saved_handler = signal.signal(signal.SIGINT, self._pressed)
        self._saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        mask, self._saved_mask = self._saved_mask, None
        if mask is None:
            return
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._restore_handler()
        if self._presses and exc_type is None:
            raise KeyboardInterrupt

    @contextmanager
    def on_the_way_out(self) -> Iterator[None]:
        """Holds Ctrl-C from the end of the block until this object exits: Python
        ignores a press raised in a weakref callback, and the run would succeed."""
        try:
            yield
        finally:
            self.__enter__()

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
    """Undoes dask_jobqueue's SIGINT handler: with it, Ctrl-C ends ``kedro run`` with
    exit status 0, as if the run had succeeded."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if main and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)


def raise_a_press_python_swallowed() -> None:
    """Releases the import lock a Ctrl-C left held (Python printed "Exception ignored"),
    which would hang another thread's import (a cluster's start), and raises it."""
    held = False
    while _imp.lock_held():
        try:
            _imp.release_lock()
        except RuntimeError:  # another thread is importing: not ours to release
            break
        held = True
    if held:
        raise KeyboardInterrupt
