"""The iris nodes, one by one, on the shipped data (with small settings)."""

from pathlib import Path

import dask
import pandas as pd
import pytest

from {{ cookiecutter.python_package }}.pipelines.iris import nodes
from {{ cookiecutter.python_package }}.pipelines.iris.pipeline import MODELS

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SPLIT_OPTIONS = {"test_fraction": 0.2, "random_state": 3}
MODEL_SELECTION = {"folds": 2, "repeats": 1, "random_state": 7}
GRIDS = {
    "logistic_regression": {"logisticregression__C": [1.0]},
    "support_vector_machine": {"svc__C": [1.0]},
    "random_forest": {"n_estimators": [10]},
    "gradient_boosting": {"n_estimators": [10]},
}
SIMULATION = {"partitions": 3, "rows_per_partition": 500, "random_state": 11}


@pytest.fixture(scope="module")
def iris() -> pd.DataFrame:
    return pd.read_csv(PROJECT_ROOT / "data" / "01_raw" / "iris.csv")


@pytest.fixture(scope="module")
def split(iris):
    return nodes.split_data(iris, SPLIT_OPTIONS)


def tune(split, model: str):
    x_train, _, y_train, _ = split
    options = {"estimator": model, "grid": GRIDS[model]}
    return nodes.tune_model(x_train, y_train, options, MODEL_SELECTION)


def test_split_holds_out_the_test_fraction_with_the_species_in_proportion(split):
    x_train, x_test, y_train, y_test = split
    assert (len(x_train), len(x_test), len(y_train), len(y_test)) == (120, 30, 120, 30)
    assert "species" not in x_train.columns
    assert set(x_train.index).isdisjoint(x_test.index)
    assert y_test.value_counts().to_dict() == {
        "setosa": 10,
        "versicolor": 10,
        "virginica": 10,
    }


@pytest.mark.parametrize("model", MODELS)
def test_every_model_is_tuned_and_learns_iris(split, model):
    _, x_test, _, y_test = split
    fitted, cross_validation = tune(split, model)
    metrics = nodes.evaluate(fitted, cross_validation, x_test, y_test)
    assert metrics["candidates"] == 1
    assert metrics["cv_accuracy"] >= 0.85
    assert metrics["test_accuracy"] >= 0.8


def test_tuning_is_reproducible(split):
    first, second = tune(split, "random_forest"), tune(split, "random_forest")
    assert first[1] == second[1]


def test_an_unknown_estimator_is_refused(split):
    x_train, _, y_train, _ = split
    with pytest.raises(ValueError, match="Unknown estimator 'tree'"):
        nodes.tune_model(x_train, y_train, {"estimator": "tree"}, MODEL_SELECTION)


def test_comparison_puts_the_best_first_and_plots_it():
    table = nodes.compare_models(
        b={"cv_accuracy": 0.9, "cv_std": 0.01, "test_accuracy": 0.9},
        a={"cv_accuracy": 0.95, "cv_std": 0.02, "test_accuracy": 0.9},
    )
    assert list(table["model"]) == ["a", "b"]
    figure = nodes.plot_comparison(table)
    assert len(figure.axes[0].patches) == 4  # two bars per model


def test_the_best_model_scores_the_simulated_batch(iris, split):
    flowers = nodes.simulate_flowers(iris, SIMULATION)
    assert flowers.npartitions == 3
    comparison = pd.DataFrame({"model": ["random_forest"]})
    with dask.config.set(scheduler="sync"):
        scores = nodes.score_at_scale(
            flowers, comparison, random_forest=tune(split, "random_forest")[0]
        )
        again = nodes.simulate_flowers(iris, SIMULATION).compute()
    assert scores["rows"] == 1500
    assert scores["model"] == "random_forest"
    assert min(scores["accuracy_by_species"].values()) > 0.8
    assert again.equals(flowers.compute(scheduler="sync"))
