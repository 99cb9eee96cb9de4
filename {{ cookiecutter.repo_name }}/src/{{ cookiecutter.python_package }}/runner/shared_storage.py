"""Whether the Dask workers see this machine's files where the catalog puts them.

Kedro makes the catalog's local paths absolute on the machine that runs
``kedro run``; a node's task loads and saves them on its worker. A worker on
another machine that does not share that disk would read another copy and save
where this machine never finds the outputs. So the driver writes a marker file
named after the run into each directory that holds the run's local datasets, and
each worker looks for them all when it is prepared for the run (``run_setup``):
a worker that misses one stops the run before any node runs, and one that joins
later stops it before one of its nodes touches those files. Remote paths
(``s3://``, ``gcs://``, ...) need no check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

from kedro.io import AbstractDataset
from kedro.io.core import get_protocol_and_path


@dataclass(frozen=True)
class SharedStorage:
    """The directories of a run's local datasets, and how the driver marked them."""

    #: Dataset names by the existing directory that holds them.
    datasets: Mapping[str, list[str]]
    #: Marker file name per directory; for a directory the driver cannot write
    #: to, the names, sizes and times of its files instead.
    proofs: Mapping[str, str | tuple] = field(default_factory=dict)

    @classmethod
    def of(cls, datasets: Mapping[str, AbstractDataset]) -> SharedStorage | None:
        """The local directories of ``datasets``; None if they use none."""
        folders: dict[str, list[str]] = {}
        for name, dataset in datasets.items():
            if (folder := _local_folder(dataset)) is not None:
                folders.setdefault(str(folder), []).append(name)
        return cls(folders) if folders else None

    @contextmanager
    def marked(self, token: str) -> Iterator[SharedStorage]:
        """Puts a marker named after the run in each directory, for the run."""
        marker = f".kedro-dask-{token}"
        proofs: dict[str, str | tuple] = {}
        try:
            for folder in self.datasets:
                proofs[folder] = _mark(Path(folder), marker)
            yield replace(self, proofs=proofs)
        finally:
            for folder in proofs:
                with suppress(OSError):
                    (Path(folder) / marker).unlink()

    def unseen(self) -> list[str]:
        """On a worker: the directories it does not see as the driver does."""
        return [f for f, proof in self.proofs.items() if not _sees(f, proof)]

    def uses(self, names: Iterable[str]) -> bool:
        """Whether any of the datasets ``names`` is in these directories."""
        return any(name in found for found in self.datasets.values() for name in names)

    def refusal(self, unseen: Mapping[str, list[str]]) -> str:
        """One paragraph for the workers that do not see the run's files."""
        folders = sorted({folder for missing in unseen.values() for folder in missing})
        names = sorted({name for folder in folders for name in self.datasets[folder]})
        return (
            f"The Dask workers {', '.join(sorted(unseen))} do not see this "
            f"machine's files at the paths of the datasets {', '.join(names)} "
            f"(under {', '.join(folders)}): their nodes would read another disk's "
            f"copies and save where this machine never finds the outputs, so the "
            f"run was stopped before they touched them. Put the data on storage "
            f"every worker reaches at the same path and point the catalog there "
            f"(conf/remote/globals.yml: data_root, a shared mount or an object "
            f"store such as s3://...), or mount this machine's data folder at the "
            f"same path on every worker. If the workers' own copies are what you "
            f"want, set dask_client.check_shared_storage: false."
        )


def _local_folder(dataset: AbstractDataset) -> Path | None:
    """The nearest existing directory above a local dataset's path."""
    location = getattr(dataset, "_filepath", None) or getattr(dataset, "_path", None)
    if not location:
        return None
    protocol, path = get_protocol_and_path(str(location))
    # fsspec datasets keep the path without its protocol (s3://bucket/x: bucket/x)
    if getattr(dataset, "_protocol", protocol) not in ("file", "local", None):
        return None
    if protocol != "file":
        return None
    folder = Path(path).absolute().parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def _mark(folder: Path, marker: str) -> str | tuple:
    try:
        (folder / marker).touch()
    except OSError:  # read-only storage: compare what is in it instead
        return _listing(folder)
    return marker


def _sees(folder: str, proof: str | tuple) -> bool:
    if isinstance(proof, str):
        return os.path.isfile(os.path.join(folder, proof))
    return not proof or _listing(Path(folder)) == proof


def _listing(folder: Path) -> tuple:
    try:
        entries = [e for e in os.scandir(folder) if e.is_file()]
    except OSError:
        return ("unreadable",)
    return tuple(
        sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    )
