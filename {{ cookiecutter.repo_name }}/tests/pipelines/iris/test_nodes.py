"""The iris nodes, one by one, on the shipped data."""

from pathlib import Path

import pandas as pd
import pytest

from {{ cookiecutter.python_package }}.pipelines.iris import nodes
from {{ cookiecutter.python_package }}.pipelines.iris.pipeline import MODELS

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SPLIT_OPTIONS = {"test_fraction": 0.2, "random_state": 3, "target_column": "species"}
MODEL_OPTIONS = {
    "nearest_centroid": {},
    "k_nearest_neighbours": {"k": 5},
    "gaussian_naive_bayes": {"var_smoothing": 1e-9},
}


@pytest.fixture(scope="module")
def split():
    iris = pd.read_csv(PROJECT_ROOT / "data" / "01_raw" / "iris.csv")
    return nodes.split_data(iris, SPLIT_OPTIONS)


def test_split_holds_out_the_test_fraction(split):
    x_train, x_test, y_train, y_test = split
    assert (len(x_train), len(x_test), len(y_train), len(y_test)) == (120, 30, 120, 30)
    assert "species" not in x_train.columns
    assert set(x_train.index).isdisjoint(x_test.index)


def test_split_is_reproducible(split):
    iris = pd.read_csv(PROJECT_ROOT / "data" / "01_raw" / "iris.csv")
    again = nodes.split_data(iris, SPLIT_OPTIONS)
    for first, second in zip(split, again):
        assert first.equals(second)


@pytest.mark.parametrize("algorithm", MODELS)
def test_every_model_learns_iris(split, algorithm):
    x_train, x_test, y_train, y_test = split
    options = {"algorithm": algorithm, **MODEL_OPTIONS[algorithm]}
    model = nodes.train_model(x_train, y_train, options)
    predictions = nodes.predict(model, x_test)
    metrics = nodes.evaluate(y_test, predictions)
    assert metrics["test_rows"] == 30
    assert metrics["accuracy"] >= 0.85


def test_unknown_algorithm_is_refused(split):
    x_train, _, y_train, _ = split
    with pytest.raises(ValueError, match="Unknown algorithm 'tree'"):
        nodes.train_model(x_train, y_train, {"algorithm": "tree"})


def test_comparison_puts_the_most_accurate_first():
    table = nodes.compare_models(
        b={"accuracy": 0.9, "test_rows": 30}, a={"accuracy": 0.95, "test_rows": 30}
    )
    assert list(table["model"]) == ["a", "b"]
