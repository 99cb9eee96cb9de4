"""Checks workers see the driver's local dataset files at the same paths, else they
read other copies and save where the driver never looks: the driver marks each folder
and every worker, late joiners too (``run_setup``), checks before its nodes run."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kedro.io import AbstractDataset


@dataclass(frozen=True)
class SharedStorage:
    """The directories of a run's local datasets, and how the driver marked them."""

    #: Dataset names by the existing directory that holds them.
    datasets: Mapping[str, list[str]]
    #: Marker file per directory, or its file listing where the driver cannot write.
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
                try:
                    (Path(folder) / marker).touch()
                    proofs[folder] = marker
                except OSError:  # read-only storage: compare what is in it instead
                    proofs[folder] = _listing(Path(folder))
            yield replace(self, proofs=proofs)
        finally:
            for folder in proofs:
                with suppress(OSError):
                    (Path(folder) / marker).unlink()

    def unseen(self) -> list[str]:
        """On a worker: the directories it does not see as the driver does."""
        return [f for f, proof in self.proofs.items() if not _sees(f, proof)]

    def uses(self, names: Iterable[str]) -> bool:
        return any(name in found for found in self.datasets.values() for name in names)

    def refusal(self, unseen: Mapping[str, list[str]]) -> str:
        folders = sorted({folder for missing in unseen.values() for folder in missing})
        names = sorted({name for folder in folders for name in self.datasets[folder]})
        return (
            f"The Dask workers {', '.join(sorted(unseen))} do not see this "
            f"machine's files at the paths of the datasets {', '.join(names)} "
            f"(under {', '.join(folders)}): their nodes would use other copies. Set "
            f"conf/remote/globals.yml: data_root to storage every worker reaches at "
            f"the same path (a shared mount, s3://...), or set dask_client."
            f"check_shared_storage: false."
        )


def _local_folder(dataset: AbstractDataset) -> Path | None:
    """The nearest existing directory above a local dataset's path."""
    from kedro.io.core import get_protocol_and_path  # noqa: PLC0415 (sent by value)

    location = getattr(dataset, "_filepath", None) or getattr(dataset, "_path", None)
    if not location:
        return None
    protocol, path = get_protocol_and_path(str(location))
    # fsspec datasets keep the path without its protocol (s3://bucket/x: bucket/x)
    fs_protocol = getattr(dataset, "_protocol", protocol)
    if protocol != "file" or fs_protocol not in ("file", "local", None):
        return None
    folder = Path(path).absolute().parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


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
