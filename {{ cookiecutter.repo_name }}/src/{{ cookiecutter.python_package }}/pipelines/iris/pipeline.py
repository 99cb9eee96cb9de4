"""The iris pipeline: model selection in parallel branches, then scoring at scale.

- ``split_data`` holds out a test set.
- One branch per candidate model (a namespace, with its parameters under that
  name in ``parameters.yml``): ``tune_model`` grid-searches it by repeated
  cross-validation, ``evaluate`` scores it on the held-out rows. A branch's
  model leaves it as ``<namespace>_model``, its metrics as ``<namespace>_metrics``
  (names outside a namespace hold no dot). The branches are independent, so Dask
  runs them side by side.
- ``compare_models`` ranks them; ``plot_comparison`` draws the ranking.
- ``simulate_flowers`` builds a large simulated batch as a ``dask.dataframe``
  (persisted as Parquet), and ``score_at_scale`` classifies it with the best
  model: both run their partitions on the Dask workers.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    compare_models,
    evaluate,
    plot_comparison,
    score_at_scale,
    simulate_flowers,
    split_data,
    tune_model,
)

MODELS = (
    "logistic_regression",
    "support_vector_machine",
    "random_forest",
    "gradient_boosting",
)
_SPLIT = ("X_train", "X_test", "y_train", "y_test")


def create_pipeline(**kwargs) -> Pipeline:
    split = Pipeline(
        [
            Node(
                split_data,
                inputs=["iris", "params:split_options"],
                outputs=list(_SPLIT),
                name="split_data",
            )
        ]
    )
    candidate = Pipeline(
        [
            Node(
                tune_model,
                inputs=[
                    "X_train",
                    "y_train",
                    "params:model_options",
                    "params:model_selection",
                ],
                outputs=["model", "cross_validation"],
                name="tune_model",
            ),
            Node(
                evaluate,
                inputs=["model", "cross_validation", "X_test", "y_test"],
                outputs="metrics",
                name="evaluate",
            ),
        ]
    )
    candidates = [
        Pipeline(
            candidate,
            namespace=model,
            inputs=set(_SPLIT),
            parameters={"params:model_selection"},
            outputs={"model": f"{model}_model", "metrics": f"{model}_metrics"},
        )
        for model in MODELS
    ]
    report = Pipeline(
        [
            Node(
                compare_models,
                inputs={model: f"{model}_metrics" for model in MODELS},
                outputs="model_comparison",
                name="compare_models",
            ),
            Node(
                plot_comparison,
                inputs="model_comparison",
                outputs="model_comparison_plot",
                name="plot_comparison",
            ),
        ]
    )
    at_scale = Pipeline(
        [
            Node(
                simulate_flowers,
                inputs=["iris", "params:simulation"],
                outputs="simulated_flowers",
                name="simulate_flowers",
            ),
            Node(
                score_at_scale,
                inputs={
                    "flowers": "simulated_flowers",
                    "comparison": "model_comparison",
                }
                | {model: f"{model}_model" for model in MODELS},
                outputs="batch_scores",
                name="score_at_scale",
            ),
        ]
    )
    return Pipeline([split, *candidates, report, at_scale])
