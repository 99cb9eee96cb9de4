"""Ctrl-C while the runner starts or closes a cluster. A terminal sends SIGINT to the
driver and a LocalCluster's workers alike: workers start with it blocked for life (a
blocked mask, unlike a handler, survives ``exec``), so the driver alone stops the run.
A press during a cluster's start or close is held back (not to leave processes or
batch jobs behind) and raised once it is done; a second press raises at once.
"""

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
    """Holds Ctrl-C back inside ``with``, in the main thread only; re-raises a press
    on the way out. Threads started inside (the cluster's event loop) block SIGINT,
    and so do the processes they start."""

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
    """Importing dask_jobqueue sets a SIGINT handler that makes Ctrl-C end ``kedro run``
    silently with exit status 0, as if the run had succeeded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)


def raise_a_press_python_swallowed() -> None:
    """Raises a Ctrl-C that Python printed as "Exception ignored" because it hit
    importlib's lock clean-up just after it took the import lock: held on, that lock
    makes another thread's first import (a cluster's start) wait forever."""
    held = False
    while _imp.lock_held():
        try:
            _imp.release_lock()
        except RuntimeError:  # another thread is importing: not ours to release
            break
        held = True
    if held:
        raise KeyboardInterrupt
