"""Run failures that are not a node's own error; ``cli.py`` prints what to do."""


class DaskSetupError(RuntimeError):
    """Nothing ran: a bad ``dask_client`` setting, an unreachable scheduler, or
    objects Dask workers cannot receive or see."""


class DaskRunError(RuntimeError):
    """The cluster failed the run under way (scheduler gone, workers dying, a time
    limit); finished nodes' persisted outputs are kept, so the run can resume."""
