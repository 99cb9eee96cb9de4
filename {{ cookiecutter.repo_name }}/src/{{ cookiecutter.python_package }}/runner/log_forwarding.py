"""Node log records and prints reach the driver's console as in a sequential run:
workers send them (``--async`` threads too) as scheduler events tagged with the run
token, and the driver re-emits its run's through ``conf/logging.yml``."""

from __future__ import annotations

import json
import logging
import pickle
import sys
import threading
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

import distributed

from .errors import pickled_each, unpickled_each

TOPIC = "kedro-node-logs"
RUN_FIELD = "kedro_run"
#: The field of an event that holds a print: ``[stream name, text]``.
PRINTED = "kedro_printed"
#: The field of an event that holds a warning: ``[text, category, file, line]``.
WARNED = "kedro_warned"
_WORKER_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
_DASKS_OWN = ("distributed", "tornado", "asyncio", "bokeh")

# A worker's logging (JSON is YAML) until its first node sends the driver's levels.
# Else Kedro reads conf/logging.yml, says so per worker, and each writes info.log.
WORKER_START_LOGGING = json.dumps(
    {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": _WORKER_FORMAT}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"kedro.framework.project": {"level": "WARNING"}},
        "root": {"handlers": ["console"], "level": "INFO"},
    }
)


def driver_logging() -> bytes:
    """This process's logger levels (``""``: the root logger) and warning filters, in
    order, each filter pickled alone (a worker skips one whose category it cannot
    import), compressed: Python's default filters name ``__main__``, and a task
    whose pickle holds that word is pickled again by distributed with cloudpickle,
    4 times slower, for every node."""
    levels = {"": logging.getLogger().level}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    filters = pickled_each(dict(enumerate(warnings.filters)))
    return zlib.compress(pickle.dumps((levels, filters)))


class _NodeLogForwarder(logging.Handler):
    """Worker root handler: node records go to their run's driver, others to stderr."""

    def __init__(self) -> None:
        super().__init__()
        #: The workers of this process that ran nodes (one, unless --no-nanny).
        self.workers: set[distributed.Worker] = set()
        #: Runs this process forwards the records of, or (driver) runs.
        self.tokens: set[str] = set()
        self.levels: dict[str, int] | None = None
        #: The ``driver_logging`` these levels came from.
        self.driver_logging = b""
        #: Set when the runner is about to close this worker: levels stay quiet.
        self.closing = False
        #: ``logging.captureWarnings``' own, for warnings outside nodes.
        self.log_warning: Callable[..., None] = warnings.showwarning
        self.local = logging.StreamHandler()
        self.local.setFormatter(logging.Formatter(_WORKER_FORMAT))

    def run_of(self, thread: int | None, logger: str) -> tuple[str, Any] | None:
        """The run and worker of the node ``thread`` runs; for other threads
        (``--async``, a node's partitions), of the only run with a node under way,
        else (a thread a node left running) of the only run this process served."""
        runs = {
            thread_id: (token, worker)
            for worker in list(self.workers)
            for thread_id, key in list(worker.active_threads.items())
            if (token := self.run_in(key)) is not None
        }
        if thread in runs:
            return runs[thread]
        if logger.startswith(_DASKS_OWN):
            return None
        found = set(runs.values())
        tokens, workers = list(self.tokens), list(self.workers)
        if not found and len(tokens) == len(workers) == 1 and not self.closing:
            found = {(tokens[0], workers[0])}
        return found.pop() if len({token for token, _ in found}) == 1 else None

    def run_in(self, key: Any) -> str | None:
        """The run a task key names (``<function>-<run token>-<node name>``)."""
        name = str(key[0] if isinstance(key, tuple) else key)
        return next((part for part in name.split("-") if part in self.tokens), None)

    def emit(self, record: logging.LogRecord) -> None:
        if (found := self.run_of(record.thread, record.name)) is None:
            self.local.handle(record)
            return
        self.format(record)  # caches the traceback's text in exc_text
        # Events travel as msgpack: plain values, others (extra=...) as their text.
        fields = {
            k: v if isinstance(v, _PLAIN) else str(v)
            for k, v in vars(record).items()
            if k not in _FORMATTED
        }
        fields.update(msg=record.getMessage(), args=None, exc_info=None)
        token, worker = found
        _send_prints()  # first, as they were printed first
        worker.log_event(TOPIC, {**fields, RUN_FIELD: token})


class _NodePrints:
    """A worker's stdout or stderr: node prints go to the run's driver, held up to 0.1 s
    or the node's next record or end, as one event per print slows loops that print."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream, self.name = stream, name
        self._held: dict[tuple[str, Any], list[str]] = {}
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if (found := _forwarder.run_of(threading.get_ident(), "")) is None:
            return int(self.stream.write(text))
        with self._lock:
            if not self._held:  # a closed loop (worker closing): sent at node end
                loop = found[1].loop
                with suppress(RuntimeError):
                    loop.add_callback(loop.call_later, 0.1, self.send)
            self._held.setdefault(found, []).append(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def send(self) -> None:
        """Sends what is held; at every node's end and record, mostly nothing."""
        with self._lock:
            held, self._held = self._held, {}
        for (token, worker), texts in held.items():
            printed = [self.name, "".join(texts)]
            worker.log_event(TOPIC, {RUN_FIELD: token, PRINTED: printed})

    def flush(self) -> None:
        self.send()
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty...
        return getattr(self.stream, name)


def _warned(  # noqa: PLR0913, PLR0917 (warnings.showwarning's parameters)
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A worker's ``warnings.showwarning``: a node's warning goes to its driver, which
    shows it as one process would, once per run, not once per worker process (each
    keeps its own record of those shown)."""
    found = _forwarder.run_of(threading.get_ident(), "py.warnings")
    if found is None or file is not None:  # not a node's, or written to a file
        _forwarder.log_warning(message, category, filename, lineno, file, line)
        return
    token, worker = found
    kind = f"{category.__module__}:{category.__qualname__}"
    _send_prints()  # first, as they were printed first
    warned = [str(message), kind, filename, lineno]
    worker.log_event(TOPIC, {RUN_FIELD: token, WARNED: warned})


def _category(kind: str) -> type[Warning]:
    """The class ``_warned`` named, if this process has imported it, or a namesake."""
    module, _, name = kind.partition(":")
    found = getattr(sys.modules.get(module), name, None)
    if isinstance(found, type) and issubclass(found, Warning):
        return found
    return type(name, (Warning,), {"__module__": module})


def _send_prints() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _NodePrints):
            stream.send()


_PLAIN = (str, int, float, bool, type(None))
#: Record fields sent formatted, as the message and the traceback's text.
_FORMATTED = frozenset({"msg", "args", "exc_info", "message"})
_forwarder = _NodeLogForwarder()
_setup_lock = threading.Lock()


@contextmanager
def node_logs_to_driver(run_token: str, driver_logging: bytes) -> Iterator[None]:
    """Forwards the run's node records and prints from this worker to its driver."""
    with _setup_lock:
        new_run = run_token not in _forwarder.tokens  # this process's first node of it
        if new_run or _forwarder.driver_logging != driver_logging:
            levels, warning_filters = pickle.loads(zlib.decompress(driver_logging))
            if _forwarder.levels != levels and not _forwarder.closing:
                _take_levels(levels)
            _forwarder.driver_logging = driver_logging
        if new_run:
            # The driver's filters, and no warning shown yet, as in a new process:
            # resetting bumps the filters' version, emptying every module's registry.
            filters = list(unpickled_each(warning_filters).values())
            warnings.resetwarnings()
            warnings.filters[:] = filters  # type: ignore[index]
            warnings.onceregistry.clear()  # type: ignore[attr-defined]
        _forwarder.workers.add(distributed.get_worker())
        _forwarder.tokens.add(run_token)  # last: the records are forwarded now
    try:
        yield
    finally:
        _send_prints()


def _take_levels(levels: dict[str, int]) -> None:
    """Replaces root handlers and std streams, so a worker sharing the driver's terminal
    does not print node output twice; warnings become records, as on the driver."""
    for name in (_forwarder.levels or {}).keys() - levels.keys():  # an earlier run's
        logging.getLogger(name or None).setLevel(logging.NOTSET)
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    logging.captureWarnings(True)
    if warnings.showwarning is not _warned:
        _forwarder.log_warning, warnings.showwarning = warnings.showwarning, _warned
    for name in ("stdout", "stderr"):
        if not isinstance(stream := getattr(sys, name), _NodePrints):
            setattr(sys, name, _NodePrints(stream, name))
    logging.getLogger().handlers[:] = [_forwarder]
    _forwarder.levels = levels


def quiet_before_closing() -> None:
    """Silences a worker process the runner is about to close: Dask about the tasks
    it cancels after Ctrl-C or a failure, Dask and its event loop about the exit."""
    with _setup_lock:
        _forwarder.closing = True
        for name in _DASKS_OWN:
            logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def forward_node_logs(client: distributed.Client, run_token: str) -> Iterator[None]:
    """On the driver: re-emits the node log records, prints and warnings of run
    ``run_token``; a warning through this process's filters, once per run."""
    shown: dict[Any, int] = {}  # the run's record of the warnings shown

    def emit(event: tuple[float, dict[str, Any]]) -> None:
        if event[1].get(RUN_FIELD) != run_token:  # another run's, on a shared cluster
            return
        if PRINTED in event[1]:
            stream, text = event[1][PRINTED]
            getattr(sys, stream).write(text)
            return
        if WARNED in event[1]:
            text, kind, filename, lineno = event[1][WARNED]
            category = _category(kind)
            with suppress(Exception):  # an "error" filter: the node raised it
                warnings.warn_explicit(text, category, filename, lineno, registry=shown)
            return
        record = logging.makeLogRecord(event[1])
        target = logging.getLogger(record.name)
        if target.isEnabledFor(record.levelno):
            target.handle(record)

    with subscribed(client, TOPIC, emit):
        yield


@contextmanager
def subscribed(
    client: distributed.Client, topic: str, handler: Callable[[Any], None]
) -> Iterator[None]:
    """Hears the workers' events on ``topic`` (``worker.log_event``) in the block."""
    client.subscribe_topic(topic, handler)
    try:
        yield
    finally:
        if client.status == "running":  # else the scheduler went, and this with it
            with suppress(Exception):
                client.unsubscribe_topic(topic)


@contextmanager
def registered(client: distributed.Client, plugin: Any, name: str) -> Iterator[None]:
    """The worker plugin on every worker, late joiners too, in the block."""
    client.register_plugin(plugin, name=name)
    try:
        yield
    finally:
        if client.status == "running":
            with suppress(Exception):  # not over the run's own error
                client.unregister_worker_plugin(name)


@contextmanager
def failures_unlogged(run_token: str) -> Iterator[None]:
    """Workers in this process (``processes: false``) log a failed node and, until they
    close, every task cancelled after it: the run raises the node's error, named."""
    _forwarder.tokens.add(run_token)
    try:
        yield
    finally:
        _forwarder.tokens.discard(run_token)


@contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    saved = logger.level
    logger.setLevel(logging.CRITICAL + 1)  # Dask logs some failures as critical
    try:
        yield
    finally:
        logger.setLevel(saved)


_ROUTINE = (
    "Shuffle %s initialized by task",
    "Shuffle %s deactivated",
    "Removing worker",
)


def _not_dasks_noise(record: logging.LogRecord) -> bool:
    """Drops what a sequential run does not print: P2P shuffle and lost-worker warnings
    (a recomputed node says so itself); a node's failure (the driver raises its error,
    named) and, during a run, the tasks cancelled after it; ``sync()``'s bogus
    NameError traceback at Ctrl-C before its coroutine sets what ``cancel`` reads."""
    message = str(record.msg)
    if message.startswith(_ROUTINE):
        return False
    if message.startswith("Compute Failed"):
        return not any(token in record.getMessage() for token in _forwarder.tokens)
    if message.startswith("Async instruction for"):
        return not _forwarder.tokens
    error = record.exc_info[1] if record.exc_info else None
    if not isinstance(error, NameError):
        return True
    # A NameError logged without a traceback has no frames: keep it.
    frames = traceback.extract_tb(error.__traceback__)[-1:]
    return not any(
        frame.name == "cancel" and frame.filename == distributed.utils.__file__
        for frame in frames
    )


for _name in (
    "distributed.scheduler",
    "distributed.shuffle._scheduler_plugin",
    "distributed.worker",
    "distributed.worker.state_machine",
    "tornado.application",
):
    logging.getLogger(_name).addFilter(_not_dasks_noise)
