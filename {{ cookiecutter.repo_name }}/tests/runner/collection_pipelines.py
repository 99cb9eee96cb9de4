"""Pipelines whose nodes compute dask collections, as big-data projects' nodes do.

Every partition function records where it ran (a worker's address, or ``local``
for a thread pool outside the cluster), so the tests can check that the run's own
cluster computed the partitions, whichever thread of the node asked for them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import dask
import dask.dataframe as dd
import distributed
import pandas as pd
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline
from kedro_datasets.dask import ParquetDataset
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset

from .parity_pipelines import Case, identity

PARTITIONS = 8
ROWS = 4_000


def where_this_runs() -> str:
    try:
        return distributed.get_worker().address
    except ValueError:
        return "local"


def _recorded(partition: pd.DataFrame, records: str) -> pd.DataFrame:
    """Leaves ``partition`` as it is and notes which worker computed it."""
    Path(records, uuid.uuid4().hex).write_text(where_this_runs())
    return partition


def build_measurements(records: str) -> dd.DataFrame:
    """A lazy frame of ``PARTITIONS`` partitions; each records where it is computed."""
    frame = pd.DataFrame(
        {
            "group": [i % 5 for i in range(ROWS)],
            "value": [float(i) for i in range(ROWS)],
        }
    )
    lazy = dd.from_pandas(frame, npartitions=PARTITIONS)
    return lazy.map_partitions(_recorded, records, meta=frame.head(0))


def summarise(measurements: dd.DataFrame) -> pd.DataFrame:
    return measurements.groupby("group")["value"].sum().compute().to_frame()


def doubled(measurements: dd.DataFrame) -> dd.DataFrame:
    return measurements.assign(value=measurements["value"] * 2)


def total_by_compute(measurements: dd.DataFrame) -> float:
    return float(measurements["value"].sum().compute())


def total_by_dask_compute(measurements: dd.DataFrame) -> float:
    (total,) = dask.compute(measurements["value"].sum())
    return float(total)


def total_by_persist_and_wait(measurements: dd.DataFrame) -> float:
    persisted = measurements.persist()
    distributed.wait(persisted)
    return float(persisted["value"].sum().compute())


def total_by_client_compute(measurements: dd.DataFrame) -> float:
    client = distributed.get_client()
    return float(client.compute(measurements["value"].sum()).result())


def persisted_on_the_cluster(measurements: dd.DataFrame) -> dd.DataFrame:
    return measurements.persist()


def build_save_load_aggregate(records: Path) -> Case:
    """Build a lazy frame, save it as Parquet, load it back and aggregate it to
    pandas; a second branch takes the lazy frame in memory and derives another."""
    pipeline = Pipeline(
        [
            Node(build_measurements, "params:records", "measurements", name="build"),
            Node(identity, "measurements", "measurements_parquet", name="save"),
            Node(summarise, "measurements_parquet", "summary", name="summarise"),
            Node(doubled, "measurements", "doubled", name="double_in_memory"),
            Node(summarise, "doubled", "doubled_summary", name="summarise_doubled"),
        ]
    )

    def catalog(folder: Path) -> DataCatalog:
        catalog = DataCatalog(
            datasets={
                "measurements_parquet": ParquetDataset(
                    filepath=str(folder / "measurements")
                ),
                **{
                    name: CSVDataset(filepath=str(folder / f"{name}.csv"))
                    for name in ("summary", "doubled_summary")
                },
            }
        )
        catalog["params:records"] = str(records)
        return catalog

    return Case("build_save_load_aggregate", pipeline, catalog)


def four_ways_to_compute(records: Path) -> Case:
    """Four nodes at once, each waiting on the cluster in its own way."""
    ways = [
        total_by_compute,
        total_by_dask_compute,
        total_by_persist_and_wait,
        total_by_client_compute,
    ]
    pipeline = Pipeline(
        [
            Node(build_measurements, "params:records", "measurements", name="build"),
            *(
                Node(way, "measurements", way.__name__, name=way.__name__)
                for way in ways
            ),
        ]
    )

    def catalog(folder: Path) -> DataCatalog:
        catalog = DataCatalog(
            datasets={
                way.__name__: JSONDataset(filepath=str(folder / f"{way.__name__}.json"))
                for way in ways
            }
        )
        catalog["params:records"] = str(records)
        return catalog

    return Case("four_ways_to_compute", pipeline, catalog)
