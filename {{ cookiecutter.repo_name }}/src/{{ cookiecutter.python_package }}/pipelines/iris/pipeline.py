"""The iris pipeline: one split, three classifier branches, one report.

Each classifier branch is the same modular pipeline under its own namespace, so
its parameters live under that name in ``parameters.yml``. A branch's model is
``<namespace>.model``; its predictions and metrics leave the namespace as
``<namespace>_predictions`` and ``<namespace>_metrics`` for the report.
"""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    collect_predictions,
    compare_models,
    evaluate,
    predict,
    split_data,
    train_model,
)

MODELS = ("nearest_centroid", "k_nearest_neighbours", "gaussian_naive_bayes")
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
    classifier = Pipeline(
        [
            Node(
                train_model,
                inputs=["X_train", "y_train", "params:model_options"],
                outputs="model",
                name="train_model",
            ),
            Node(predict, inputs=["model", "X_test"], outputs="y_pred", name="predict"),
            Node(
                evaluate,
                inputs=["y_test", "y_pred"],
                outputs="metrics",
                name="evaluate",
            ),
        ]
    )
    classifiers = [
        Pipeline(
            classifier,
            namespace=model,
            inputs=set(_SPLIT),
            outputs={"y_pred": f"{model}_predictions", "metrics": f"{model}_metrics"},
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
                collect_predictions,
                inputs={"labels": "y_test"}
                | {model: f"{model}_predictions" for model in MODELS},
                outputs="predictions",
                name="collect_predictions",
            ),
        ]
    )
    return Pipeline([split, *classifiers, report])
