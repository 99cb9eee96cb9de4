"""The two ways a run fails for a reason that is not a node's own error.

``kedro run`` prints them as one paragraph that says what to do (``cli.py``).
"""


class DaskSetupError(RuntimeError):
    """The run could not start and no node has run: a bad ``dask_client`` setting,
    an unreachable scheduler, or what Dask workers cannot receive or see."""


class DaskRunError(RuntimeError):
    """The cluster failed the run under way: the scheduler went away, a node's
    workers kept dying, or a node outran its time limit. Persisted outputs of the
    nodes that finished are kept, so the run can resume."""
