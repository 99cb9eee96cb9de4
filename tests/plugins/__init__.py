"""Kedro plugins under DaskRunner, compared with SequentialRunner on the same
project: kedro-mlflow (a real `mlflow server`, and a sqlite store), kedro-viz's
dataset statistics and a project's own hooks (`nox -s plugins`)."""
