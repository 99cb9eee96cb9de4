"""Pipelines that the parity tests run under SequentialRunner and DaskRunner.

Node functions live at module level so that Dask worker processes can import them.
Each case builds a fresh catalog in a folder, so every runner starts from the same
files and its persisted outputs can be compared file by file.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import distributed
import pandas as pd
from kedro.io import (
    AbstractDataset,
    AbstractVersionedDataset,
    DataCatalog,
    MemoryDataset,
    Version,
)
from kedro.io.core import generate_timestamp
from kedro.pipeline import Node, Pipeline
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset
from kedro_datasets.partitions import IncrementalDataset
from kedro_datasets.text import TextDataset

logger = logging.getLogger(__name__)


def identity(x):
    return x


def add(a, b):
    return a + b


def add_one(x):
    return x + 1


def slow_add_one(x):
    time.sleep(0.05)
    return x + 1


def double(x):
    return 2 * x


def scale(x, factor):
    return x * factor


def total(*values):
    return sum(values)


def low_and_high(x):
    return {"low": x - 1, "high": x + 1}


def itself_and_tenfold(x):
    return x, 10 * x


def make_items():
    return ["a", "b", "c"]


def count(items):
    return len(items)


def append_marker(items):
    items.append("marker")  # mutates its input: copy modes must protect others
    return len(items)


def append_marker_after(items, _after):
    """Changes ``items`` in place once the node given as ``_after`` has run."""
    return append_marker(items)


def count_after(items, _after):
    return len(items)


def growing_buffer():
    """A generator node yielding one list, grown each time, emptied at its end."""
    buffer = []
    for item in ("a", "b", "c"):
        buffer.append(item)
        yield buffer
    buffer.clear()


def make_table():
    return pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})


def count_lines(text):
    return len(text.strip().splitlines())


def log_and_double(x):
    logger.info("log_and_double got %s", x, extra={"tags": ("a", "b")})
    return 2 * x


def slowly_log_and_double(x):
    time.sleep(0.3)  # two at once: one on each worker
    return log_and_double(x)


def log_later(x):
    """Starts a thread that logs once this node has returned."""
    threading.Timer(0.3, logger.info, args=("logged later, about %s", x)).start()
    return x


def wait_then_double(x):
    time.sleep(1.5)  # the run goes on while another node's thread logs
    return 2 * x


def warn_and_double(x):
    warnings.warn(f"warned about {x}", UserWarning)
    return 2 * x


def warn_and_tell_pid(x):
    """Slow enough that each of two single-threaded workers takes some of them."""
    time.sleep(0.2)
    warnings.warn(f"warned about {x}", UserWarning)
    return os.getpid()


def fail_once(marker):
    """Fails on the first call, when ``marker`` does not exist yet."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise RuntimeError("first try fails")
    return "second try"


class SaveFailsOnce(AbstractDataset):
    """Fails its first save, when ``marker`` does not exist yet."""

    def __init__(self, marker: str) -> None:
        self._marker = marker

    def _save(self, data: Any) -> None:
        fail_once(self._marker)

    def _load(self) -> Any:
        raise NotImplementedError

    def _describe(self) -> dict[str, Any]:
        return {"marker": self._marker}


class VersionedWithoutFileSystem(AbstractVersionedDataset):
    """A versioned dataset on the local disk that, unlike kedro-datasets', keeps no
    fsspec file system in ``_fs``."""

    def __init__(self, filepath: str, version: Version | None = None) -> None:
        super().__init__(PurePosixPath(filepath), version)

    def _save(self, data: Any) -> None:
        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(data))

    def _load(self) -> Any:
        return pickle.loads(Path(self._get_load_path()).read_bytes())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class HalvingMemoryDataset(MemoryDataset):
    """An in-memory dataset whose own save changes the data, as some projects' do."""

    def save(self, data: Any) -> None:
        super().save(data / 2)


def fail(x):
    raise ValueError(f"boom while handling {x}")


class LockedError(RuntimeError):
    """Holds what cannot be pickled, as errors holding a connection do."""

    def __init__(self, message: str, *more: object) -> None:
        super().__init__(message, *more)
        self.lock = threading.Lock()


def fail_holding_a_lock(x):
    try:
        fail(x)
    except ValueError as error:
        raise LockedError(f"locked while handling {x}") from error


def fail_with_a_lock_in_its_args(x):
    raise LockedError(f"locked while handling {x}", threading.Lock())


@dataclass(frozen=True)
class Case:
    """A pipeline and how to make its catalog in a folder."""

    name: str
    pipeline: Pipeline
    catalog: Callable[[Path], DataCatalog]

    def __str__(self) -> str:
        return self.name


def _json(folder: Path, *names: str) -> dict:
    return {name: JSONDataset(filepath=str(folder / f"{name}.json")) for name in names}


def _catalog(datasets: dict, **parameters) -> DataCatalog:
    catalog = DataCatalog(datasets=datasets)
    for name, value in parameters.items():
        catalog[f"params:{name}"] = value
    return catalog


def diamond() -> Case:
    pipeline = Pipeline(
        [
            Node(double, "seed", "left", name="left"),
            Node(add_one, "seed", "right", name="right"),
            Node(add, ["left", "right"], "result", name="join"),
        ]
    )
    return Case(
        "diamond",
        pipeline,
        lambda f: _catalog({"seed": MemoryDataset(3), **_json(f, "result")}),
    )


def fan_out_fan_in(width: int = 20) -> Case:
    branches = [f"branch_{i}" for i in range(width)]
    pipeline = Pipeline(
        [
            Node(add_one, "seed", "source", name="source"),
            *(
                Node(scale, ["source", f"params:factor_{i}"], out, name=out)
                for i, out in enumerate(branches)
            ),
            Node(total, branches, "sum", name="fan_in"),
        ]
    )
    factors = {f"factor_{i}": i for i in range(width)}
    return Case(
        "fan_out_fan_in",
        pipeline,
        lambda f: _catalog({"seed": MemoryDataset(1), **_json(f, "sum")}, **factors),
    )


def long_chain(length: int = 30, step: Callable = add_one) -> Case:
    names = ["seed", *(f"link_{i}" for i in range(length - 1)), "end"]
    pipeline = Pipeline(
        [
            Node(step, source, target, name=f"step_{i}")
            for i, (source, target) in enumerate(zip(names, names[1:]))
        ]
    )
    return Case(
        "long_chain",
        pipeline,
        lambda f: _catalog({"seed": MemoryDataset(0), **_json(f, "end")}),
    )


def namespaces_and_parameters() -> Case:
    template = Pipeline(
        [
            Node(scale, ["x", "params:factor"], "scaled", name="scale"),
            Node(add, ["scaled", "x"], "z", name="add"),
        ]
    )
    pipeline = Pipeline(
        [
            Pipeline(template, namespace="first", inputs={"x"}),
            Pipeline(template, namespace="second", inputs={"x"}),
        ]
    )
    parameters = {"first.factor": 2, "second.factor": 3}
    return Case(
        "namespaces_and_parameters",
        pipeline,
        lambda f: _catalog(
            {"x": MemoryDataset(5), **_json(f, "first.z", "second.z")}, **parameters
        ),
    )


def transcoded() -> Case:
    pipeline = Pipeline(
        [
            Node(make_table, None, "table@pandas", name="make_table"),
            Node(count_lines, "table@text", "line_count", name="count_lines"),
        ]
    )

    def catalog(folder: Path) -> DataCatalog:
        path = str(folder / "table.csv")
        return _catalog(
            {
                "table@pandas": CSVDataset(filepath=path, save_args={"index": False}),
                "table@text": TextDataset(filepath=path),
                **_json(folder, "line_count"),
            }
        )

    return Case("transcoded", pipeline, catalog)


def several_outputs() -> Case:
    pipeline = Pipeline(
        [
            Node(low_and_high, "seed", {"low": "low", "high": "high"}, name="split"),
            Node(itself_and_tenfold, "seed", ["single", "tenfold"], name="pair"),
            Node(add, ["low", "tenfold"], "mixed", name="mix"),
        ]
    )
    # `high` and `single` have no catalog entry and no consumer: free outputs.
    return Case(
        "several_outputs",
        pipeline,
        lambda f: _catalog({"seed": MemoryDataset(7), **_json(f, "mixed")}),
    )


def raising(error: BaseException) -> Callable[[Any], Any]:
    def raise_it(_: Any) -> Any:
        raise error

    return raise_it


def make_lock():
    return threading.Lock()


def unsendable() -> Case:
    """`lock` cannot be pickled, nor deep-copied by its MemoryDataset; without a
    consumer it would travel to the driver (Dask fails there, not in the node)."""
    pipeline = Pipeline([Node(make_lock, None, "lock", name="make_lock")])
    return Case("unsendable", pipeline, lambda f: _catalog({}))


def _rebuilt_on_a_worker() -> WorkerOnly:
    distributed.get_worker()  # raises ValueError elsewhere
    return WorkerOnly()


class WorkerOnly:
    """Pickles anywhere, unpickles only on a Dask worker: as an object of a package
    only the workers have."""

    def __reduce__(self):
        return _rebuilt_on_a_worker, ()


def worker_only() -> Case:
    """Its output travels from its worker but cannot be loaded by the driver;
    SequentialRunner's MemoryDataset fails to deep-copy it."""
    pipeline = Pipeline([Node(WorkerOnly, None, "worker_only", name="make_it")])
    return Case("worker_only", pipeline, lambda f: _catalog({}))


def locks_in_a_frame():
    return pd.DataFrame({"id": [1, 2], "lock": [threading.Lock(), threading.Lock()]})


def framed_unsendable() -> Case:
    """A DataFrame whose object column holds locks: Kedro's ``MemoryDataset`` copies
    it (SequentialRunner passes it on), pickle cannot."""
    pipeline = Pipeline([Node(locks_in_a_frame, None, "frame", name="frame_locks")])
    return Case("framed_unsendable", pipeline, lambda f: _catalog({}))


def partition_names(partitions):
    return sorted(partitions)


def add_a_partition(processed, folder):
    """A file that arrives after the partitions were read, before they are confirmed."""
    (Path(folder) / "p9.csv").write_text("a\n9\n")
    return processed


def confirmed_downstream() -> Case:
    """`incoming` is read by one node and confirmed by a later one, as Kedro's docs
    show for IncrementalDataset."""
    pipeline = Pipeline(
        [
            Node(partition_names, "incoming", "processed", name="process"),
            Node(
                add_a_partition, ["processed", "params:incoming"], "later", name="add"
            ),
            Node(identity, "later", "reported", name="report", confirms="incoming"),
        ]
    )

    def catalog(folder: Path) -> DataCatalog:
        incoming = folder / "incoming"
        incoming.mkdir(parents=True)
        for number in range(3):
            (incoming / f"p{number}.csv").write_text(f"a\n{number}\n")
        dataset = IncrementalDataset(path=str(incoming), dataset="pandas.CSVDataset")
        return _catalog({"incoming": dataset}, incoming=str(incoming))

    return Case("confirmed_downstream", pipeline, catalog)


def make_partitions():
    return {"p1": pd.DataFrame({"a": [1]}), "p2": pd.DataFrame({"a": [2]})}


def produced_then_confirmed() -> Case:
    """`incoming` gets partitions from one node, then is read and confirmed by the
    next: the reader must see them."""
    pipeline = Pipeline(
        [
            Node(make_partitions, None, "incoming", name="produce"),
            Node(
                partition_names, "incoming", "names", name="read", confirms="incoming"
            ),
        ]
    )

    def catalog(folder: Path) -> DataCatalog:
        incoming = folder / "incoming"
        incoming.mkdir(parents=True)
        (incoming / "p0.csv").write_text("a\n0\n")
        dataset = IncrementalDataset(path=str(incoming), dataset="pandas.CSVDataset")
        return _catalog({"incoming": dataset})

    return Case("produced_then_confirmed", pipeline, catalog)


def absolute(value):
    return abs(value)


def at_most_ten(value):
    if value > 10:  # noqa: PLR2004
        raise ValueError(f"{value} is over 10")
    return value


def validated(seed: int) -> Case:
    """The catalog's `validator:`: `seed` is made positive as it loads,
    `doubled` is refused over 10 as it saves."""
    pipeline = Pipeline([Node(double, "seed", "doubled", name="double")])

    def catalog(folder: Path) -> DataCatalog:
        (folder / "seed.json").write_text(str(seed))
        json = {"type": "json.JSONDataset"}
        load_only = {"class": f"{__name__}.absolute", "on": ["load"]}
        config = {
            "seed": {
                **json,
                "filepath": str(folder / "seed.json"),
                "validator": load_only,
            },
            "doubled": {
                **json,
                "filepath": str(folder / "doubled.json"),
                "validator": f"{__name__}.at_most_ten",
            },
        }
        return DataCatalog.from_config(config)

    return Case(f"validated_{seed}", pipeline, catalog)


def memory_subclass() -> Case:
    """`halved` and `halved_free` are of a MemoryDataset subclass: the consumer gets
    what its save kept, the caller the free output saved once."""
    pipeline = Pipeline(
        [
            Node(double, "seed", "halved", name="double"),
            Node(add_one, "halved", "result", name="add_one"),
            Node(double, "seed", "halved_free", name="double_free"),
        ]
    )
    return Case(
        "memory_subclass",
        pipeline,
        lambda f: _catalog(
            {
                "seed": MemoryDataset(3),
                "halved": HalvingMemoryDataset(),
                "halved_free": HalvingMemoryDataset(),
                **_json(f, "result"),
            }
        ),
    )


def versioned_rerun(seed: int) -> Case:
    """`make` saves a new version of `versioned` on each run, which `use` loads."""
    pipeline = Pipeline(
        [
            Node(itself_and_tenfold, "seed", ["versioned", "marker"], name="make"),
            Node(add_one, "versioned", "used", name="use"),
        ]
    )
    return Case(
        "versioned_rerun",
        pipeline,
        lambda f: _catalog(
            {
                "seed": MemoryDataset(seed),
                "versioned": JSONDataset(
                    filepath=str(f / "versioned.json"),
                    version=Version(None, generate_timestamp()),
                ),
                **_json(f, "marker", "used"),
            }
        ),
    )


#: A node of ``many_outputs`` returns this many parts of this many bytes.
PARTS, PART_BYTES = 8, 2**22


def split_into_parts(seed: int) -> tuple[bytes, ...]:
    return tuple(bytes([seed + i]) * PART_BYTES for i in range(PARTS))


def many_outputs() -> Case:
    """One node with more outputs than the cluster has threads, one consumer each."""
    parts = [f"part_{i}" for i in range(PARTS)]
    pipeline = Pipeline(
        [
            Node(split_into_parts, "seed", parts, name="split_parts"),
            *(
                Node(len, part, f"length_{i}", name=f"measure_{i}")
                for i, part in enumerate(parts)
            ),
        ]
    )
    return Case(
        "many_outputs", pipeline, lambda f: _catalog({"seed": MemoryDataset(7)})
    )


def copy_mode(mode: str | None, mutate: bool) -> Case:
    first = append_marker if mutate else count
    pipeline = Pipeline(
        [
            Node(make_items, None, "items", name="make_items"),
            Node(first, "items", "first", name="first"),
            Node(count, "items", "second", name="second"),
        ]
    )
    label = f"copy_mode_{mode}{'_mutating' if mutate else ''}"
    return Case(
        label,
        pipeline,
        lambda f: _catalog(
            {"items": MemoryDataset(copy_mode=mode), **_json(f, "first", "second")}
        ),
    )


def passed_on_then_changed() -> Case:
    """``check`` passes on its input, which it did not copy (``assign``); ``change``
    then changes that input in place. Kedro copied ``checked`` as it was saved."""
    pipeline = Pipeline(
        [
            Node(make_items, None, "items", name="make_items"),
            Node(identity, "items", "checked", name="check"),
            Node(append_marker_after, ["items", "checked"], "changed", name="change"),
            Node(count_after, ["checked", "changed"], "counted", name="count"),
        ]
    )
    return Case(
        "passed_on_then_changed",
        pipeline,
        lambda f: _catalog(
            {"items": MemoryDataset(copy_mode="assign"), **_json(f, "counted")}
        ),
    )


def reused_generator_buffer() -> Case:
    """Kedro saves a copy of each chunk: the last is the full list, not the emptied
    buffer."""
    pipeline = Pipeline(
        [
            Node(growing_buffer, None, "chunks", name="stream"),
            Node(count, "chunks", "counted", name="count"),
        ]
    )
    return Case(
        "reused_generator_buffer",
        pipeline,
        lambda f: _catalog(_json(f, "counted")),
    )


def with_logging() -> Case:
    pipeline = Pipeline([Node(log_and_double, "seed", "doubled", name="log_node")])
    return Case(
        "with_logging",
        pipeline,
        lambda f: _catalog({"seed": MemoryDataset(21), **_json(f, "doubled")}),
    )


def resumable() -> Case:
    """`stored` persists between runs; `final` depends on it."""
    pipeline = Pipeline(
        [
            Node(double, "seed", "stored", name="store"),
            Node(add, ["stored", "seed"], "final", name="finish"),
            Node(add_one, "seed", "other", name="other"),
        ]
    )
    return Case(
        "resumable",
        pipeline,
        lambda f: _catalog(
            {"seed": MemoryDataset(4), **_json(f, "stored", "final", "other")}
        ),
    )


def failing_with_a_lock(function: Callable = fail_holding_a_lock) -> Case:
    return Case(
        "failing_with_a_lock",
        Pipeline([Node(function, "seed", "broken", name="locked_node")]),
        lambda f: _catalog({"seed": MemoryDataset(1)}),
    )


def failing() -> Case:
    pipeline = Pipeline(
        [
            Node(add_one, "seed", "saved", name="before_failure"),
            Node(fail, "saved", "broken", name="failing_node"),
            Node(add_one, "broken", "never", name="after_failure"),
        ]
    )
    return Case(
        "failing",
        pipeline,
        lambda f: _catalog({"seed": MemoryDataset(1), **_json(f, "saved", "never")}),
    )


PARITY_CASES = [
    diamond(),
    fan_out_fan_in(),
    long_chain(),
    namespaces_and_parameters(),
    transcoded(),
    several_outputs(),
    memory_subclass(),
    *(copy_mode(mode, mutate=False) for mode in (None, "deepcopy", "copy", "assign")),
    *(copy_mode(mode, mutate=True) for mode in ("deepcopy", "copy")),
    passed_on_then_changed(),
    reused_generator_buffer(),
]
