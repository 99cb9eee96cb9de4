"""A minimal Kedro project package whose only purpose is its settings: hooks that
record every node and dataset hook call, so tests can compare runners' hook calls
even when the hooks fire in Dask worker processes."""
