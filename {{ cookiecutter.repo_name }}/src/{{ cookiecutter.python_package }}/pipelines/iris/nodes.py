"""Nodes of the iris pipeline.

The three classifiers are small, dependency-free numpy models. Each is an
independent branch of the pipeline, so Dask fits and evaluates them at the same
time on different workers. They use elementwise numpy only (no BLAS), so every
runner produces byte-identical outputs.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def split_data(
    data: pd.DataFrame, parameters: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Shuffles the rows reproducibly and holds out ``test_fraction`` of them.

    Returns:
        Training features, test features, training labels, test labels.
    """
    target = parameters["target_column"]
    rng = np.random.default_rng(parameters["random_state"])
    shuffled = data.iloc[rng.permutation(len(data))].reset_index(drop=True)
    n_test = round(len(shuffled) * parameters["test_fraction"])
    features = shuffled.drop(columns=target)
    labels = shuffled[target]
    logger.info(
        "Split %d rows into %d for training and %d for testing",
        len(data),
        len(data) - n_test,
        n_test,
    )
    return (
        features.iloc[n_test:],
        features.iloc[:n_test],
        labels.iloc[n_test:],
        labels.iloc[:n_test],
    )


def train_model(
    features: pd.DataFrame, labels: pd.Series, model_options: dict[str, Any]
) -> dict[str, Any]:
    """Fits the classifier ``model_options["algorithm"]`` names."""
    algorithm = model_options["algorithm"]
    if algorithm not in _FITTERS:
        raise ValueError(
            f"Unknown algorithm {algorithm!r} in model_options; "
            f"choose one of {sorted(_FITTERS)}."
        )
    classes = sorted(labels.unique())
    x = features.to_numpy(dtype=float)
    y = labels.map({name: index for index, name in enumerate(classes)}).to_numpy()
    model = {"algorithm": algorithm, "classes": classes, "columns": list(features)}
    model.update(_FITTERS[algorithm](x, y, len(classes), model_options))
    logger.info("Fitted %s on %d rows", algorithm, len(x))
    return model


def predict(model: dict[str, Any], features: pd.DataFrame) -> pd.Series:
    """Predicts a class name for each row of ``features``."""
    x = features[model["columns"]].to_numpy(dtype=float)
    scores = _SCORERS[model["algorithm"]](model, x)
    names = np.asarray(model["classes"], dtype=object)[scores.argmax(axis=1)]
    return pd.Series(names, index=features.index, name=model["algorithm"])


def evaluate(labels: pd.Series, predictions: pd.Series) -> dict[str, float]:
    """Accuracy of ``predictions`` against the true ``labels``."""
    accuracy = float((labels.to_numpy() == predictions.to_numpy()).mean())
    logger.info("%s: accuracy %.3f on %d rows", predictions.name, accuracy, len(labels))
    return {"accuracy": accuracy, "test_rows": len(labels)}


def compare_models(**metrics: dict[str, float]) -> pd.DataFrame:
    """One row per model, the most accurate first."""
    table = pd.DataFrame(
        [{"model": name, **values} for name, values in sorted(metrics.items())]
    )
    return table.sort_values(["accuracy", "model"], ascending=[False, True])


def collect_predictions(labels: pd.Series, **predictions: pd.Series) -> pd.DataFrame:
    """The true class next to every model's prediction, one row per test flower."""
    table = pd.DataFrame({"species": labels})
    for name, values in sorted(predictions.items()):
        table[name] = values
    return table


def _fit_nearest_centroid(
    x: np.ndarray, y: np.ndarray, n_classes: int, options: dict[str, Any]
) -> dict[str, Any]:
    return {"centroids": np.stack([x[y == c].mean(axis=0) for c in range(n_classes)])}


def _score_nearest_centroid(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    centroids = model["centroids"]
    return -((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)


def _fit_k_nearest_neighbours(
    x: np.ndarray, y: np.ndarray, n_classes: int, options: dict[str, Any]
) -> dict[str, Any]:
    return {"x": x, "y": y, "k": int(options["k"]), "n_classes": n_classes}


def _score_k_nearest_neighbours(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    distances = ((x[:, None, :] - model["x"][None, :, :]) ** 2).sum(axis=2)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, : model["k"]]
    votes = model["y"][nearest]
    return np.stack(
        [(votes == c).sum(axis=1) for c in range(model["n_classes"])], axis=1
    )


def _fit_gaussian_naive_bayes(
    x: np.ndarray, y: np.ndarray, n_classes: int, options: dict[str, Any]
) -> dict[str, Any]:
    groups = [x[y == c] for c in range(n_classes)]
    return {
        "means": np.stack([group.mean(axis=0) for group in groups]),
        "variances": np.stack([group.var(axis=0) for group in groups])
        + float(options["var_smoothing"]),
        "log_priors": np.log([len(group) / len(x) for group in groups]),
    }


def _score_gaussian_naive_bayes(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    means, variances = model["means"], model["variances"]
    log_likelihood = -0.5 * (
        np.log(2 * np.pi * variances)[None, :, :]
        + (x[:, None, :] - means[None, :, :]) ** 2 / variances[None, :, :]
    ).sum(axis=2)
    return log_likelihood + model["log_priors"][None, :]


_FITTERS = {
    "nearest_centroid": _fit_nearest_centroid,
    "k_nearest_neighbours": _fit_k_nearest_neighbours,
    "gaussian_naive_bayes": _fit_gaussian_naive_bayes,
}
_SCORERS = {
    "nearest_centroid": _score_nearest_centroid,
    "k_nearest_neighbours": _score_k_nearest_neighbours,
    "gaussian_naive_bayes": _score_gaussian_naive_bayes,
}
