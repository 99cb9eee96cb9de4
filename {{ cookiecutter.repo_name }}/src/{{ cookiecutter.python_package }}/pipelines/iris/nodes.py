"""Nodes of the iris pipeline.

Model selection: each candidate model is tuned by a cross-validated grid search
in a branch of its own, so Dask runs the searches side by side on different
workers. Scoring at scale: the best model classifies a large simulated batch of
flowers, a ``dask.dataframe`` whose partitions Dask computes on the workers.

Everything is seeded (``random_state`` in ``parameters.yml``) and every search
runs with ``n_jobs=1``, so every runner produces the same outputs.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.base import ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    RepeatedStratifiedKFold,
    train_test_split,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

logger = logging.getLogger(__name__)

TARGET = "species"

# The estimators that ``model_options.estimator`` names. Scaled where the
# model depends on the features' scale; grid keys are the estimator's own.
ESTIMATORS = {
    "logistic_regression": lambda seed: make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000)
    ),
    "support_vector_machine": lambda seed: make_pipeline(StandardScaler(), SVC()),
    "random_forest": lambda seed: RandomForestClassifier(random_state=seed, n_jobs=1),
    "gradient_boosting": lambda seed: GradientBoostingClassifier(random_state=seed),
}


def split_data(
    data: pd.DataFrame, parameters: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Holds out ``test_fraction`` of the rows, with the species in proportion.

    Returns:
        Training features, test features, training labels, test labels.
    """
    x_train, x_test, y_train, y_test = train_test_split(
        data.drop(columns=TARGET),
        data[TARGET],
        test_size=parameters["test_fraction"],
        stratify=data[TARGET],
        random_state=parameters["random_state"],
    )
    logger.info(
        "Split %d rows into %d for training and %d for testing",
        len(data),
        len(x_train),
        len(x_test),
    )
    return x_train, x_test, y_train, y_test


def tune_model(
    features: pd.DataFrame,
    labels: pd.Series,
    model_options: dict[str, Any],
    model_selection: dict[str, Any],
) -> tuple[ClassifierMixin, dict[str, Any]]:
    """Grid-searches ``model_options.grid`` for the estimator it names, by
    repeated stratified k-fold cross-validation.

    Returns:
        The best candidate refitted on all training rows, and its
        cross-validated accuracy (the search itself also holds fit times,
        which differ from run to run).
    """
    name = model_options["estimator"]
    if name not in ESTIMATORS:
        raise ValueError(
            f"Unknown estimator {name!r} in model_options; "
            f"choose one of {sorted(ESTIMATORS)}."
        )
    seed = model_selection["random_state"]
    folds = RepeatedStratifiedKFold(
        n_splits=model_selection["folds"],
        n_repeats=model_selection["repeats"],
        random_state=seed,
    )
    search = GridSearchCV(
        ESTIMATORS[name](seed), model_options["grid"], cv=folds, n_jobs=1
    )
    search.fit(features, labels)
    best = search.best_index_
    summary = {
        "candidates": len(search.cv_results_["params"]),
        "cv_accuracy": round(float(search.cv_results_["mean_test_score"][best]), 6),
        "cv_std": round(float(search.cv_results_["std_test_score"][best]), 6),
        "best_params": {k: _plain(v) for k, v in search.best_params_.items()},
    }
    logger.info(
        "%s: best of %d candidates %s, cross-validated accuracy %.3f",
        name,
        summary["candidates"],
        summary["best_params"],
        summary["cv_accuracy"],
    )
    return search.best_estimator_, summary


def evaluate(
    model: ClassifierMixin,
    cross_validation: dict[str, Any],
    features: pd.DataFrame,
    labels: pd.Series,
) -> dict[str, Any]:
    """The tuned model's cross-validated and held-out accuracy."""
    accuracy = round(float(model.score(features, labels)), 6)
    logger.info(
        "%s: accuracy %.3f on %d held-out rows",
        type(model).__name__,
        accuracy,
        len(labels),
    )
    return {**cross_validation, "test_accuracy": accuracy}


def compare_models(**metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per model, the best (cross-validated, then held out) first."""
    table = pd.DataFrame(
        [
            {"model": name, **{k: v for k, v in values.items() if k != "best_params"}}
            for name, values in sorted(metrics.items())
        ]
    )
    return table.sort_values(
        ["cv_accuracy", "test_accuracy", "model"], ascending=[False, False, True]
    ).reset_index(drop=True)


def plot_comparison(comparison: pd.DataFrame) -> Figure:
    """Cross-validated accuracy (with its spread) and held-out accuracy per model.
    A bare ``Figure``, not pyplot's: no display or global state on a worker."""
    figure = Figure(figsize=(7, 3.5), dpi=100)
    axes = figure.subplots()
    rows = np.arange(len(comparison))
    axes.barh(
        rows + 0.2,
        comparison["cv_accuracy"],
        height=0.4,
        xerr=comparison["cv_std"],
        label="cross-validated",
    )
    axes.barh(rows - 0.2, comparison["test_accuracy"], height=0.4, label="held out")
    axes.set_yticks(rows, comparison["model"].str.replace("_", " "))
    axes.invert_yaxis()
    axes.set_xlim(0.8, 1.0)
    axes.set_xlabel("accuracy")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def simulate_flowers(iris: pd.DataFrame, simulation: dict[str, Any]) -> dd.DataFrame:
    """A large batch of flowers drawn from each species' measured distribution
    (its mean and covariance): ``partitions`` partitions of
    ``rows_per_partition`` rows, each from its own seed, built on the workers."""
    features = iris.drop(columns=TARGET)
    species = sorted(iris[TARGET].unique())
    shapes = {
        name: (
            features[iris[TARGET] == name].mean(),
            features[iris[TARGET] == name].cov(),
        )
        for name in species
    }
    make = partial(
        _simulated_partition,
        shapes=shapes,
        columns=list(features),
        rows=simulation["rows_per_partition"],
        seed=simulation["random_state"],
    )
    meta = pd.DataFrame(
        {**{c: pd.Series(dtype=float) for c in features}, TARGET: pd.Series(dtype=str)}
    )
    return dd.from_map(make, range(simulation["partitions"]), meta=meta)


def score_at_scale(
    flowers: dd.DataFrame, comparison: pd.DataFrame, **models: ClassifierMixin
) -> dict[str, Any]:
    """Classifies every simulated flower with the best model, partition by
    partition on the workers, and reports its accuracy per species."""
    best = comparison["model"].iloc[0]
    model = models[best]
    counts = flowers.map_partitions(
        partial(_score_partition, model=model),
        meta={"species": str, "rows": int, "correct": int},
    )
    totals = counts.groupby("species")[["rows", "correct"]].sum().compute()
    totals = totals.sort_index()
    accuracy = {
        name: round(int(row.correct) / int(row.rows), 6)
        for name, row in totals.iterrows()
    }
    rows = int(totals["rows"].sum())
    logger.info(
        "%s classified %d simulated flowers: accuracy %.3f",
        best,
        rows,
        totals["correct"].sum() / rows,
    )
    return {"model": best, "rows": rows, "accuracy_by_species": accuracy}


def _simulated_partition(
    index: int,
    shapes: dict[str, tuple[pd.Series, pd.DataFrame]],
    columns: list[str],
    rows: int,
    seed: int,
) -> pd.DataFrame:
    rng = np.random.default_rng([seed, index])
    names = sorted(shapes)
    labels = np.asarray(names, dtype=object)[rng.integers(len(names), size=rows)]
    values = np.empty((rows, len(columns)))
    for name in names:
        chosen = labels == name
        mean, cov = shapes[name]
        values[chosen] = rng.multivariate_normal(
            mean.to_numpy(), cov.to_numpy(), size=int(chosen.sum())
        )
    frame = pd.DataFrame(values, columns=columns)
    frame[TARGET] = labels
    return frame


def _score_partition(part: pd.DataFrame, model: ClassifierMixin) -> pd.DataFrame:
    predicted = model.predict(part.drop(columns=TARGET))
    correct = pd.Series(predicted == part[TARGET].to_numpy(), index=part.index)
    grouped = correct.groupby(part[TARGET].to_numpy())
    return pd.DataFrame(
        {
            "species": grouped.size().index,
            "rows": grouped.size().to_numpy(),
            "correct": grouped.sum().to_numpy().astype(int),
        }
    )


def _plain(value: Any) -> Any:
    """A JSON-friendly parameter value (numpy scalars become Python's)."""
    return value.item() if isinstance(value, np.generic) else value
