"""The example's per-model metrics as two floats per branch, for kedro-mlflow's
``MlflowMetricDataset`` (tests/plugins writes this file into the project as the
pipeline package ``plugin_tracked``; a user would add such nodes the same way)."""

import mlflow
from kedro.pipeline import Node, Pipeline

from ..iris.pipeline import MODELS


def split_metrics(metrics: dict) -> tuple[float, float]:
    """A branch's cross-validated and held-out accuracy."""
    return float(metrics["cv_accuracy"]), float(metrics["test_accuracy"])


def log_in_the_node(metrics: dict) -> None:
    """Logs with MLflow's own API inside a node, as many projects do: into the
    run kedro-mlflow opened."""
    mlflow.log_metric("logged_in_a_node", float(metrics["test_accuracy"]))
    mlflow.set_tag("tagged_in_a_node", "yes")


def create_pipeline(**kwargs) -> Pipeline:
    branch = Pipeline(
        [
            Node(
                split_metrics,
                inputs="metrics",
                outputs=["cv_accuracy", "test_accuracy"],
                name="track_metrics",
            )
        ]
    )
    in_the_node = Node(
        log_in_the_node, f"{MODELS[0]}_metrics", None, name="log_in_the_node"
    )
    return Pipeline(
        [
            Pipeline(branch, namespace=model, inputs={"metrics": f"{model}_metrics"})
            for model in MODELS
        ]
        + [in_the_node]
    )
