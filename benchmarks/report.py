"""Tables, targets and the ``docs/benchmarks.md`` page from the suite's results.

Every ratio compares medians of configurations measured in the same invocation.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

#: Threads of ThreadRunner, processes of ParallelRunner, and single-threaded
#: workers of the Dask clusters: the parallelism every runner gets.
WORKERS = 2
RUNNER_LABELS = {
    "sequential": "SequentialRunner",
    "thread": f"ThreadRunner ({WORKERS} threads)",
    "parallel": f"ParallelRunner ({WORKERS} processes)",
    "dask": f"DaskRunner ({WORKERS} workers x 1 thread)",
    "dask_async": "DaskRunner, is_async",
    "distributed": "raw distributed (floor)",
}
PIPELINE_TITLES = {
    "A": "A · overhead: layers of 10 trivial nodes, two parents each",
    "B": "B · cpu-wide: 8 independent pure-Python nodes, then a join",
    "C": "C · data: a chain of 10 nodes passing a numpy array",
    "D": "D · end to end: `kedro run` of the generated example project",
    "E": "E · dask collections: one node aggregates a synthetic dask.dataframe",
}
_KEDRO_AND_DASK = ("sequential", "thread", "parallel", "dask", "distributed")
#: The runners each pipeline is measured with.
PIPELINE_RUNNERS = {
    "A": _KEDRO_AND_DASK,
    "B": _KEDRO_AND_DASK,
    "C": _KEDRO_AND_DASK,
    "D": ("sequential", "dask"),
    "E": ("sequential", "dask", "dask_async", "distributed"),
}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    return f"{min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f}"


def summary_line(result: dict[str, Any]) -> str:
    """One line of progress for a finished configuration."""
    times = result["times"]
    line = f"median {_median(times):.3f} s, min–max {_spread(times)} s"
    if result.get("peak_added_mb"):
        line += f", added peak {_median(result['peak_added_mb']):.0f} MiB"
    setup = result.get("setup") or {}
    if setup:
        line += f" (start {setup['start']:.2f} s, close {setup['close']:.2f} s)"
    return line


class _Results:
    """The results of one invocation, looked up by runner and variant."""

    def __init__(self, suite: dict[str, Any]) -> None:
        self.suite = suite
        self.rows = suite["results"]

    def of(self, pipeline: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["pipeline"] == pipeline]

    def find(self, runner: str, pipeline: str, size: Any = None) -> dict | None:
        for row in self.of(pipeline):
            if row["runner"] == runner and (size is None or row["size"] == size):
                return row
        return None

    def median(self, runner: str, pipeline: str, size: Any = None) -> float | None:
        row = self.find(runner, pipeline, size)
        return _median(row["times"]) if row else None


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A Markdown table; the first ``text_columns`` are left-aligned, numbers right."""
    rule = ["---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return "–"
    return f"{numerator / denominator:.2f}×"


def _table_a(results: _Results) -> str:
    rows, slopes = [], []
    for runner in RUNNER_LABELS:
        sized = sorted(
            (r for r in results.of("A") if r["runner"] == runner),
            key=lambda r: r["size"],
        )
        for row in sized:
            run = _median(row["times"])
            raw = results.median("distributed", "A", row["size"])
            cpu = row.get("cpu")
            rows.append(
                [
                    RUNNER_LABELS[runner],
                    str(row["size"]),
                    f"{run * 1e3:.1f}",
                    _spread(row["times"], 1e3, 1),
                    f"{run * 1e3 / row['size']:.3f}",
                    _ratio(run, raw),
                    f"{_median(cpu) * 1e3 / row['size']:.2f}" if cpu else "–",
                ]
            )
        if len(sized) >= 2:
            small, large = sized[0], sized[-1]
            t_small, t_large = _median(small["times"]), _median(large["times"])
            n_small, n_large = small["size"], large["size"]
            slopes.append(
                [
                    RUNNER_LABELS[runner],
                    f"{n_small} → {n_large}",
                    _ratio(t_large / n_large, t_small / n_small),
                    f"{(t_large - t_small) * 1e3 / (n_large - n_small):.3f}",
                ]
            )
    text = _table(
        [
            "Runner",
            "Nodes",
            "Run, median (ms)",
            "min–max (ms)",
            "Per node (ms)",
            "÷ raw distributed",
            "CPU per node (ms)",
        ],
        rows,
    )
    text += (
        "\n\n*CPU per node*: CPU time of the driver and all its descendant "
        "processes during the run (median), divided by N; it sums the work of "
        "every process, so it can exceed the wall time, and it is less sensitive "
        "than wall time to other load on the machine."
    )
    if slopes:
        text += "\n\nGrowth with N (flat is 1.00×) and the marginal cost of one more "
        text += "node (slope between the two sizes, fixed per-run costs excluded):\n\n"
        text += _table(
            ["Runner", "Nodes", "Per node, large ÷ small", "Marginal (ms/node)"],
            slopes,
        )
    return text + _table_a_on_dask(results)


def _table_a_on_dask(results: _Results) -> str:
    """When the scheduler got the graph and started the first node, and the
    driver's peak memory, of the Dask runs of A (medians)."""
    rows = []
    for row in sorted(results.of("A"), key=lambda r: (r["runner"], r["size"])):
        timelines, peaks = row.get("timelines"), row.get("driver_peak_mb")
        if not timelines or not peaks:
            continue
        rows.append(
            [
                RUNNER_LABELS[row["runner"]],
                str(row["size"]),
                f"{_median([t['graph_at_scheduler'] for t in timelines]):.3f}",
                f"{_median([t['first_node_started'] for t in timelines]):.3f}",
                f"{_median(peaks):.0f}",
            ]
        )
    if not rows:
        return ""
    return (
        "\n\nOn the Dask clusters, seconds from the start of the run until the "
        "scheduler received the run's first graph message (DaskRunner sends the "
        "whole pipeline in one; raw distributed, one per node) and until the first "
        "node started on a worker, and the driver process's peak resident memory "
        "during the run (the LocalCluster's scheduler runs in that process):\n\n"
        + _table(
            [
                "Runner",
                "Nodes",
                "Graph at the scheduler (s)",
                "First node started (s)",
                "Driver peak RSS (MiB)",
            ],
            rows,
        )
    )


def _table_b(results: _Results) -> str:
    sequential = results.median("sequential", "B")
    parallel = results.median("parallel", "B")
    rows = []
    for row in results.of("B"):
        run = _median(row["times"])
        rows.append(
            [
                RUNNER_LABELS[row["runner"]],
                f"{run:.3f}",
                _spread(row["times"]),
                _ratio(sequential, run),
                _ratio(parallel, run),
            ]
        )
    return _table(
        [
            "Runner",
            "Run, median (s)",
            "min–max (s)",
            "Speed-up vs Sequential",
            "Speed-up vs Parallel",
        ],
        rows,
    )


def _table_c(results: _Results) -> str:
    rows = []
    for row in results.of("C"):
        run = _median(row["times"])
        sequential = results.median("sequential", "C", row["size"])
        peaks = row["peak_added_mb"] or [0.0]
        rows.append(
            [
                RUNNER_LABELS[row["runner"]],
                f"{row['size']} MiB",
                f"{run:.3f}",
                _spread(row["times"]),
                _ratio(sequential, run),
                f"{_median(peaks):.0f}",
                _spread(peaks, digits=0),
            ]
        )
    return _table(
        [
            "Runner",
            "Array",
            "Run, median (s)",
            "min–max (s)",
            "Speed-up vs Sequential",
            "Added peak RSS, median (MiB)",
            "min–max (MiB)",
        ],
        rows,
    )


def _table_d(results: _Results) -> str:
    sequential = results.median("sequential", "D")
    rows = []
    for row in results.of("D"):
        run = _median(row["times"])
        extra = f"{run - sequential:+.2f}" if sequential is not None else "–"
        rows.append(
            [
                RUNNER_LABELS[row["runner"]],
                f"{run:.2f}",
                _spread(row["times"], digits=2),
                extra,
            ]
        )
    return _table(
        ["Runner", "`kedro run`, median (s)", "min–max (s)", "− Sequential (s)"], rows
    )


def _table_e(results: _Results) -> str:
    rows = []
    for row in results.of("E"):
        run = _median(row["times"])
        raw = results.median("distributed", "E", row["size"])
        sequential = results.median("sequential", "E", row["size"])
        peaks = row["peak_added_mb"] or [0.0]
        rows.append(
            [
                RUNNER_LABELS[row["runner"]],
                f"{row['size']} MiB",
                f"{run:.2f}",
                _spread(row["times"], digits=2),
                _ratio(run, raw),
                _ratio(sequential, run),
                f"{_median(peaks):.0f}",
            ]
        )
    return _table(
        [
            "Runner",
            "Frame",
            "Run, median (s)",
            "min–max (s)",
            "÷ raw distributed",
            "Speed-up vs Sequential",
            "Added peak RSS of the process tree, median (MiB)",
        ],
        rows,
    )


def _table_setup(results: _Results) -> str:
    rows = []
    for runner in RUNNER_LABELS:
        setups = [r["setup"] for r in results.rows if r["runner"] == runner]
        setups = [s for s in setups if s]
        if not setups:
            continue
        starts = [s["start"] for s in setups]
        closes = [s["close"] for s in setups]
        what = "manager process" if runner == "parallel" else "LocalCluster"
        if runner == "distributed":
            what += " + Client"
        rows.append(
            [
                RUNNER_LABELS[runner],
                what,
                str(len(setups)),
                f"{_median(starts):.2f}",
                _spread(starts, digits=2),
                f"{_median(closes):.2f}",
                _spread(closes, digits=2),
            ]
        )
    return _table(
        [
            "Runner",
            "Started and closed",
            "Configurations",
            "Start, median (s)",
            "min–max (s)",
            "Close, median (s)",
            "min–max (s)",
        ],
        rows,
        text_columns=2,
    )


@dataclass
class Target:
    """One target of the issue, checked against this invocation's medians."""

    name: str
    goal: str
    measured: str
    met: bool | None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**not met**", None: "not measured"}[self.met]


def _at_most(value: float, limit: float) -> tuple[str, bool]:
    """``value`` against ``limit`` where lower is better."""
    if value <= limit:
        return f"{(1 - value / limit) * 100:.0f}% under the limit", True
    if value > 2 * limit:
        return f"{value / limit:.1f}× the limit", False
    return f"{(value / limit - 1) * 100:.0f}% over the limit", False


def _at_least(value: float, limit: float) -> tuple[str, bool]:
    """``value`` against ``limit`` where higher is better."""
    if value >= limit:
        return f"{(value / limit - 1) * 100:.0f}% above the goal", True
    return f"{(1 - value / limit) * 100:.0f}% short of the goal", False


def _target(name: str, goal: str, outcome: tuple[str, bool] | None) -> Target:
    """A target with its measured text and verdict; ``None``: not measured."""
    if outcome is None:
        return Target(name, goal, "–", None)
    return Target(name, goal, *outcome)


def targets(suite: dict[str, Any]) -> list[Target]:
    """The issue's targets for DaskRunner, each met, not met, or not measured."""
    results = _Results(suite)
    return [
        _target("A", "per-node time ≤ 1.25× raw distributed", _a_ratio(results)),
        _a_growth(results),
        *(
            _target(
                "B",
                f"≥ {goal:g}× faster than {RUNNER_LABELS[runner]}",
                _b_speed_up(results, runner, goal),
            )
            for runner, goal in (("sequential", 1.8), ("parallel", 1.25))
        ),
        *_c_targets(results),
        _target("D", "`kedro run` ≤ 0.75× SequentialRunner's time", _d_ratio(results)),
        *(
            _target(
                "E",
                f"{RUNNER_LABELS[runner]}: ≤ {E_GOAL:g}× raw distributed",
                _e_ratio(results, runner),
            )
            for runner in ("dask", "dask_async")
        ),
    ]


def _a_ratio(results: _Results) -> tuple[str, bool] | None:
    sizes = sorted(
        {r["size"] for r in results.of("A") if r["runner"] in ("dask", "distributed")}
    )
    ratios = []
    for size in sizes:
        dask = results.median("dask", "A", size)
        raw = results.median("distributed", "A", size)
        if dask is not None and raw is not None:
            ratios.append((size, dask / raw))
    if not ratios:
        return None
    text = ", ".join(f"N={size}: {ratio:.2f}×" for size, ratio in ratios)
    margin, met = _at_most(max(ratio for _, ratio in ratios), 1.25)
    why = "" if met else "; where the difference goes: Reading the numbers, A"
    return f"{text} ({margin}{why})", met


def _a_growth(results: _Results) -> Target:
    dask_a = sorted(
        (r for r in results.of("A") if r["runner"] == "dask"), key=lambda r: r["size"]
    )
    if len(dask_a) < 2:
        return _target("A", "flat in N: per-node growth ≤ 1.15×", None)
    small, large = dask_a[0], dask_a[-1]
    growth = (_median(large["times"]) / large["size"]) / (
        _median(small["times"]) / small["size"]
    )
    margin, met = _at_most(growth, 1.15)
    return _target(
        "A",
        f"flat in N: per node at N={large['size']} ≤ 1.15× N={small['size']}",
        (f"{growth:.2f}× ({margin})", met),
    )


def _b_speed_up(results: _Results, runner: str, goal: float) -> tuple[str, bool] | None:
    dask_b = results.median("dask", "B")
    other = results.median(runner, "B")
    if dask_b is None or other is None:
        return None
    margin, met = _at_least(other / dask_b, goal)
    raw_b = results.median("distributed", "B")
    floor = f"; raw distributed: {other / raw_b:.2f}×" if raw_b else ""
    measured = f"{other / dask_b:.2f}× ({margin}{floor})"
    sequential_b = results.median("sequential", "B")
    if not met and sequential_b and other / goal < sequential_b / WORKERS:
        measured += (
            f". The goal needs a run ≤ {other / goal:.2f} s, less than any "
            f"{WORKERS} workers can take: Sequential ÷ {WORKERS} = "
            f"{sequential_b / WORKERS:.2f} s"
        )
    return measured, met


def _c_targets(results: _Results) -> list[Target]:
    sizes = [r["size"] for r in results.of("C") if r["runner"] == "dask"]
    size = max(sizes) if sizes else None
    label = f"{size} MiB" if size else "largest array"
    dask_c = results.median("dask", "C", size) if size else None
    sequential_c = results.median("sequential", "C", size) if size else None
    parallel_c = results.median("parallel", "C", size) if size else None
    dask_row = results.find("dask", "C", size) if size else None
    sequential_row = results.find("sequential", "C", size) if size else None

    no_slower = None
    if dask_c is not None and sequential_c is not None:
        margin, met = _at_most(dask_c / sequential_c, 1.0)
        no_slower = f"{dask_c:.3f} s vs {sequential_c:.3f} s ({margin})", met
    faster = None
    if dask_c is not None and parallel_c is not None:
        margin, met = _at_least(parallel_c / dask_c, 15)
        faster = f"{parallel_c / dask_c:.1f}× ({margin})", met
    memory = None
    if dask_row and sequential_row:
        dask_peak = _median(dask_row["peak_added_mb"])
        sequential_peak = _median(sequential_row["peak_added_mb"])
        memory = (
            f"{dask_peak:.0f} MiB vs {sequential_peak:.0f} MiB "
            f"({dask_peak - sequential_peak:+.0f} MiB)",
            dask_peak <= sequential_peak,
        )
    return [
        _target("C", f"{label}: no slower than SequentialRunner", no_slower),
        _target("C", f"{label}: ≥ 15× faster than ParallelRunner", faster),
        _target("C", f"{label}: added peak memory ≤ SequentialRunner's", memory),
    ]


#: D's target: DaskRunner's whole `kedro run` of the example, ÷ Sequential's.
D_GOAL = 0.75


def _d_ratio(results: _Results) -> tuple[str, bool] | None:
    dask_d = results.median("dask", "D")
    sequential_d = results.median("sequential", "D")
    if dask_d is None or sequential_d is None:
        return None
    ratio = dask_d / sequential_d
    met = ratio <= D_GOAL
    why = "" if met else "; where the time goes: Reading the numbers, D"
    return (
        f"{dask_d:.2f} s vs {sequential_d:.2f} s: {ratio:.2f}× "
        f"({abs(ratio - D_GOAL) / D_GOAL:.0%} {'under' if met else 'over'} the "
        f"limit{why})",
        met,
    )


#: E's target: DaskRunner's run of the aggregation ÷ a plain Client's.
E_GOAL = 1.1


def _e_ratio(results: _Results, runner: str) -> tuple[str, bool] | None:
    sizes = [r["size"] for r in results.of("E") if r["runner"] == runner]
    if not sizes:
        return None
    size = max(sizes)
    dask_e = results.median(runner, "E", size)
    raw_e = results.median("distributed", "E", size)
    if dask_e is None or raw_e is None:
        return None
    margin, met = _at_most(dask_e / raw_e, E_GOAL)
    return f"{size} MiB: {dask_e:.2f} s vs {raw_e:.2f} s ({margin})", met


def _table_targets(suite: dict[str, Any]) -> str:
    return _table(
        ["Pipeline", "DaskRunner target", "Measured (medians)", "Verdict"],
        [[t.name, t.goal, t.measured, t.verdict] for t in targets(suite)],
        text_columns=4,
    )


def tables(suite: dict[str, Any]) -> str:
    """The results as Markdown: one table per pipeline, setup times, targets."""
    results = _Results(suite)
    sections = []
    builders = {
        "A": _table_a,
        "B": _table_b,
        "C": _table_c,
        "D": _table_d,
        "E": _table_e,
    }
    for pipeline, build in builders.items():
        if results.of(pipeline):
            sections.append(f"### {PIPELINE_TITLES[pipeline]}\n\n{build(results)}")
    if any(row["setup"] for row in results.rows):
        sections.append(
            "### Cluster and process start-up, outside the timed runs\n\n"
            + _table_setup(results)
        )
    sections.append("### Targets\n\n" + _table_targets(suite))
    return "\n\n".join(sections) + "\n"


def _busy_warning(meta: dict[str, Any]) -> str:
    """A warning when other processes used a noticeable share of the CPU."""
    cores = meta["machine"]["logical_cores"] or 1
    other = meta.get("other_load_cores")
    if other is None or other <= 0.1 * cores:
        return ""
    return (
        f"\n**The machine was busy**: other processes kept {other:.2f} of its "
        f"{cores} cores busy on average while the suite ran, so these timings "
        f"are noisy. Rerun the command on a quiet machine before drawing "
        f"conclusions.\n"
    )


def document(suite: dict[str, Any]) -> str:
    """The whole ``docs/benchmarks.md`` page."""
    meta = suite["meta"]
    machine = meta["machine"]
    settings = meta["settings"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    invoked = meta.get("invoked_as")
    command = f"`{meta['command']}`"
    if invoked:
        command = f"`{invoked}`, which ran {command},"
    if settings.get("b_calibrated"):
        b_origin = f"calibrated to about {settings['b_seconds']:g} s on this machine"
    else:
        b_origin = "a count given with `--b-iterations`"
    warmup, repeat = settings["warmup"], settings["repeat"]
    a_nodes = ", ".join(map(str, settings["a_nodes"]))
    parallel_a_nodes = ", ".join(map(str, settings["parallel_a_nodes"]))
    dask_a_nodes = ", ".join(map(str, settings.get("dask_a_nodes") or ["–"]))
    c_megabytes = ", ".join(map(str, settings["c_megabytes"]))
    b_iterations = settings["b_iterations"]
    busy = _busy_warning(meta)
    other_load = meta.get("other_load_cores", "not measured")
    e_megabytes = ", ".join(map(str, settings.get("e_megabytes") or ["–"]))
    return f"""# Benchmarks

How `DaskRunner` compares with Kedro's own runners and with raw `distributed`
running the same graph. Generated by `benchmarks/run_benchmarks.py`; do not edit
by hand, rerun it instead.

Produced by {command} from the repository root.
{busy}
## Machine

- CPU: {machine['cpu']}; {machine['logical_cores']} logical cores
  ({machine['physical_cores']} physical); {machine['memory_gib']} GiB memory
- {machine['os']}, Python {machine['python']}
- {packages}
- Other processes' CPU use during the suite: {other_load} cores on average
  (the system's busy CPU time minus the suite's own). Load average (1, 5,
  15 min) before the suite: {meta['load_before']}; after: {meta['load_after']}
  (the suite itself keeps about 3 processes busy). Timings are only as good as
  the machine was quiet.

## Method

- The same pipeline definitions (`benchmarks/pipelines.py`) for every runner, node
  functions at module level. Each runner × pipeline (× size) configuration runs in
  a fresh process: {warmup} warm-up run(s), then {repeat} timed runs. Tables give
  the median and the min–max spread; every ratio compares medians measured in
  this same invocation.
- Only `runner.run(pipeline, catalog, hook_manager)` is timed, with a fresh
  catalog per run built outside the timer and a hook manager with no hooks
  registered (as a `KedroSession` passes one). For raw `distributed`: submitting
  the graph and gathering its outputs.
- Runners: `SequentialRunner()`, `ThreadRunner(max_workers={WORKERS})`,
  `ParallelRunner(max_workers={WORKERS})` (its manager process starts and stops outside
  the timed runs), `DaskRunner(address=cluster.scheduler_address,
  upload_project=False)` on a `LocalCluster(n_workers={WORKERS}, threads_per_worker=1,
  processes=True)` started before and closed after the timed runs, and raw
  `distributed` (one `client.submit` per node, futures as arguments, keys named
  after the node's function, only the outputs' futures kept) on an identical
  cluster. Cluster start and close are
  reported separately. `DaskRunner` connects its own `Client` to the scheduler in
  every run: that is part of its timed run.
- A–C log at WARNING for every runner (set through Kedro's logging
  configuration, so DaskRunner's workers take it too): the cost of Kedro's rich
  INFO logging is not measured. D uses the project's own `conf/logging.yml`.
- A: {a_nodes} nodes. ParallelRunner runs A at {parallel_a_nodes} nodes only:
  every node's task carries the whole catalog (a manager proxy for every
  dataset) to a pool process, so its cost per node grows with N, and 1000 nodes
  would take many minutes per run. DaskRunner and raw `distributed` also run
  A at {dask_a_nodes} nodes: Kedro's own runners take O(N²) there (see
  Reading the numbers). For the Dask runs of A, the scheduler's records give
  when it received the graph and when the first node started, and a thread
  samples the driver process's resident memory every 5 ms.
- B: each node runs `burn({b_iterations})`, {b_origin}.
- C: arrays of {c_megabytes} MiB; the first node makes the array, 8 nodes each
  return a new one, the last sums it. "Added peak RSS" is the highest summed
  resident memory of the driver and all its descendant processes (Dask nanny and
  worker processes, ParallelRunner's pool and manager), sampled every 5 ms by a
  thread, minus the same sum just before the run. RSS counts pages shared between
  processes once per process.
- D: `kedro run` and `kedro run --runner=iris_dask.runner.DaskRunner` in a
  rendered project (DaskRunner starts and closes its own LocalCluster, as a user
  gets it), wall time of the whole command; the outputs are deleted before every
  run. The two commands take turns, run after run, so that the machine's drift
  during the measurement (seen up to 0.15 s) weighs on both alike.
- E: one node builds a dask.dataframe of {e_megabytes} MiB of random numbers in
  32 partitions (each made where it is computed) and computes its sums grouped by
  an integer key (100 groups). SequentialRunner's `.compute()` uses dask's local
  threads ({WORKERS} cores); DaskRunner's, the run's cluster (sync, and with
  `is_async=True`); raw `distributed` computes the same collection from the
  driver with `client.compute(...).result()` on an identical cluster. Added peak
  RSS as in C.

## Results

{tables(suite)}
{NOTES}
"""


NOTES = """## Reading the numbers

- **A (overhead).** With trivial nodes the run time is the runner's own cost.
  Raw `distributed` here is one `client.submit` per node, futures as arguments:
  the client, the scheduler (in the driver process for a LocalCluster) and a
  worker each handle every task. DaskRunner sends the whole pipeline as one
  graph (one `update-graph` message) and follows its nodes with a done-callback
  each, registered from the client's event loop (`as_completed` before: its
  coroutines per future took 2.3 s of the client loop's CPU in the first 6 s of
  a 10,000-node run, the callbacks 0.55 s; interleaved runs on one cluster,
  medians, 10,000 nodes 16.2 against 17.0 s, 1000 nodes 1.52-1.55 against
  1.55-1.71 s, 100 nodes unchanged; measured outside this suite). From the
  first node's start to the last node's end, DaskRunner's run takes as long as
  raw `distributed`'s whole run (3.4-3.8 s against 3.5-3.8 s at N=3000, task
  streams outside this suite): the gap is before the first node starts. What
  it adds:
  - before anything is sent, the catalog's in-memory datasets. Kedro's
    `AbstractRunner.run` warm-up makes one per dataset from the `{default}`
    pattern, and each costs 0.4 ms, because Kedro imports the dataset class
    anew under three package prefixes every time (0.43 s of a 2.09 s run at
    N=1000 under cProfile). DaskRunner adds them before that warm-up, which
    then finds them: Kedro makes the first, and every name that no pattern
    of the project's catalog matches gets a copy of it (a name a pattern
    matches is left to Kedro, so that the pattern still applies); by hand,
    interleaved on one cluster, N=1000 went from 2.09 to 1.66 s. Comparing
    each name's resolved config with the first one's, as DaskRunner did
    before, cost 0.45 s of a 3,000-node run under cProfile, Kedro's
    `resolve_pattern` per name; matching the names against the project's
    patterns costs 0.075 s;
  - a fixed cost per run, which weighs at N=100 and which the "marginal"
    column excludes (cProfile of the driver, N=100: connecting a `Client` 5
    ms, closing it 12 ms, gathering the free outputs 9 ms, the in-memory
    datasets 16 ms, submitting 5 ms);
  - on the worker, Kedro's `Task` around the function (a small catalog, hooks
    around every load, save and node run, the copy Kedro's `MemoryDataset` makes
    on every load): 0.058 ms per trivial node against 0.0001 ms for the bare
    function (2,000 calls in one process, outside this suite), small beside
    Dask's own 1-2 ms per task here.
  Both name their keys `<function>-<run token>-<node>`, as `dask.delayed`
  does, so Dask groups the tasks by function (DaskRunner's key is a one-element
  tuple of that, which gives each node a task group of its own: with a group
  per function, Dask treats a big group as root tasks and places them ignoring
  where their inputs are, which made C 3.6x slower than Sequential in one
  bench run; raw `distributed` keeps plain strings, which it needs, see
  `benchmarks/pipelines.py`). Dask keeps state per group (on
  the scheduler, never dropped, and in every worker's heartbeat), and with the
  node's name first, a group per node, the same runs were far slower and not
  flat: raw `distributed` at 3,000 nodes 3.6-4.5 ms per node against 2.1-2.5
  with function names, DaskRunner at N=10,000 2.9-5.3 ms per node against
  1.75-2.07, and slower with every run on the same scheduler (29, 49, 53 s in
  three runs in a row), because the groups of earlier runs stay (measured
  outside this suite). With one message per node, Dask's own cost per
  `update-graph` still grows with the tasks the scheduler already holds, so raw
  `distributed` is itself not flat in N (see the growth table). Measured and not
  done: sending the graph in chunks, so that nodes start while the rest is sent,
  would win at most the time between "Graph at the scheduler" and "First node
  started". The driver's peak memory at N=10,000 stays around half a GiB,
  scheduler included.
  The SequentialRunner rows show Kedro's bookkeeping without any scheduler.
  Their per-node time grows with N because Kedro's `_release_datasets`
  recomputes `pipeline.inputs()` (O(N)) for every dataset it releases, so a run
  costs O(N²); ThreadRunner and ParallelRunner share that loop, DaskRunner does
  not use it.
- **B (cpu-wide).** Pure-Python nodes hold the GIL, so threads give no
  speed-up; processes can. On 2 cores the best possible run is half the
  sequential time plus the join, a speed-up just under 2×, and the driver and
  the scheduler share those 2 cores with the workers. With 9 nodes of half a
  second, the runners' per-node costs (milliseconds) hardly count, so the
  process-based runners land close to raw `distributed`, which shows what is
  reachable on this machine. DaskRunner sends small parameters inside the tasks
  that take them, so independent nodes spread over all workers from the start.
- **C (data).** Kedro's `MemoryDataset` copies a numpy array whenever a node
  loads it, under every runner, so that nodes cannot change each other's data;
  Kedro's own runners also copy it when the node's output is saved.
  SequentialRunner's peak holds four arrays (the stored input, its loaded copy,
  the new array and the copy saved into the catalog); DaskRunner's three (the
  input Dask keeps on the worker, its loaded copy, the new array, which goes to
  Dask without another copy); raw `distributed` two (no copies). DaskRunner
  keeps each array on the worker that made it and runs the next node there.
  ParallelRunner pickles every array through its manager process on each save
  and load.
- **D (end to end).** The example: four scikit-learn grid searches (about 2 s
  of one core each here) in independent branches, and a 3.2-million-row
  `dask.dataframe` built, saved as Parquet and scored with the best model.
  Phases of one `kedro run` of each, from timestamps in their logs (by hand, 2
  cores): SequentialRunner starts its first node 2.25 s after Kedro's logging
  does; its dataframe nodes take 1.65 s (simulate) and 2.3 s (score) on local
  threads, both cores; its searches 2.26, 1.40, 2.38 and 1.90 s, one after
  another: 14.9 s in all, 19.1 s of CPU. DaskRunner starts the cluster 2.7-2.9
  s in (0.3-0.6 s after Sequential's first node: the forkserver below imports
  on the other core meanwhile), its first node has finished 1.0-1.2 s later,
  the searches run two at a time (two on each worker in every run looked at),
  and the dataframe nodes' partitions share the two worker threads with them;
  the scoring takes 3.5-4.5 s against Sequential's 2.3 s (32 partitions of
  0.13 s of predicting each, read and reduced across two processes instead of
  local threads in one). So DaskRunner wins on the searches only (about 8 s of
  one core, run two at a time), since Sequential already runs the dataframe
  parts on both cores, and it pays about 1.5 s of fixed cost (the later start,
  the cluster, the first node) and slower dataframe parts: on 2 cores that
  leaves it ahead of Sequential but well short of 0.75x. The target needs more
  cores than worker processes, or more search work per simulated row.
  What cut the fixed cost: the runner's LocalCluster forks its worker
  processes from Dask's forkserver instead of spawning them (spawned 37.6 /
  26.9 s, forked 31.8 / 21.7 s, Sequential 21.6 / 20.5 s, by hand on a slow
  hour), and DaskRunner now starts that forkserver when it is created, before
  Kedro loads the project, with the project's pipelines imported there
  (`runner/worker_imports.py`), so that workers no longer import
  scikit-learn, matplotlib and dask.dataframe after the cluster has started:
  cluster start to first finished node went from 3.3-3.8 s to 1.0-1.2 s, and
  whole `kedro run`s from 17.2 / 17.7 / 20.1 s to 15.6 / 15.8 / 16.3 s
  (interleaved, by hand). The forkserver must get Dask's pre-spawn variables
  (one OpenMP and one BLAS thread): without them scikit-learn, loaded there,
  ran two OpenMP threads in each worker and the searches took up to twice as
  long. Tried and not kept: starting the whole cluster in a background thread
  (18.0 s median against 17.7 s without), 8 partitions instead of 32 (not told
  apart from the noise: the same command varied by 2-4 s within minutes on
  this machine), the dask nodes keeping their worker thread instead of leaving
  the pool (15.3 / 14.9 s with, 15.4 / 13.9 s without, two runs each).
- **E (dask collections).** The node's task leaves its worker's thread pool
  while it waits (see the generated `runner/dask_collections.py`), so both
  worker threads compute partitions, as when a plain `Client` computes the same
  collection from the driver; DaskRunner's only extra is building the graph in a
  worker process instead of the driver, and its per-run fixed cost. The
  aggregation asks for one output partition (`sum(split_out=1)`, a tree
  reduction): without it, dask on a distributed client picked a P2P shuffle for
  this groupby, about 2-3× slower here on every Dask row. SequentialRunner is
  fastest on one machine: its local threads share one process, so no partition
  result is serialised or moved between processes; the cluster rows pay that to
  be able to use more machines.
"""
