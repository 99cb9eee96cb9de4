"""Benchmarks DaskRunner against Kedro's runners and raw ``distributed``.

    python benchmarks/run_benchmarks.py                       # the full suite
    python benchmarks/run_benchmarks.py --doc docs/benchmarks.md
    python benchmarks/run_benchmarks.py --pipelines A --runners dask distributed

Pipelines (``benchmarks/pipelines.py``; the same definitions for every runner):
A "overhead", layers of 10 trivial nodes (up to 10,000 on Dask, with the driver's
peak memory and when the first node started); B "cpu-wide", 8 pure-Python nodes and a
join; C "data", a chain of 10 nodes passing a numpy array, with the peak memory of
the whole process tree; D "end to end", ``kedro run`` of the generated project;
E "dask collections", one node aggregating a synthetic dask.dataframe (the raw
floor computes it from the driver with a plain ``Client``), with peak memory.

Every runner x pipeline configuration runs in a fresh process: warm-up runs, then
``--repeat`` timed runs of ``runner.run()`` alone. Dask clusters (and
ParallelRunner's manager process) start before and close after the timed runs;
their start and close times are reported separately. A-C and E log at WARNING.
The template is rendered as a user gets it (``tests.shared.render_as_is``) to
import ``DaskRunner`` and for D.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import pipelines, report  # noqa: E402
from tests.shared import render_as_is  # noqa: E402

PACKAGE = "iris_dask"
DASK_RUNNER = f"{PACKAGE}.runner.DaskRunner"
QUIET_ENV = {"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
# Runner and pipeline names, as --runners and --pipelines take them.
RUNNERS = tuple(report.RUNNER_LABELS)
#: The runners of A that run on a Dask cluster, measured up to 10,000 nodes.
DASK_RUNNERS = ("dask", "distributed")
PIPELINES = tuple(report.PIPELINE_TITLES)
# Datasets the example pipeline writes; removed before every `kedro run` of D.
_OUTPUT_FOLDERS = ("02_intermediate", "03_primary", "04_feature", "05_model_input")
_OUTPUT_FOLDERS += ("06_models", "07_model_output", "08_reporting")


class BenchmarkError(RuntimeError):
    """A configuration failed, or runners disagreed on a pipeline's outputs."""


# --- One configuration, in its own process ----------------------------------------


def _quiet_logging() -> None:
    """A-C and E measure the runners, not the console: everything logs at WARNING.

    Set through Kedro's logging configuration, as a project's conf/logging.yml
    would be; DaskRunner's workers take the driver's levels.
    """
    from kedro.framework.project import configure_logging

    configure_logging(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "loggers": {
                name: {"level": "WARNING"} for name in ("kedro", "distributed", PACKAGE)
            },
            "root": {"level": "WARNING", "handlers": ["console"]},
        }
    )


class PeakMemory:
    """Peak summed RSS of this process and all its descendants, from a thread.

    The process list is refreshed every ``refresh`` samples, so processes a
    runner starts during the run (ParallelRunner's pool) are counted too.
    """

    def __init__(
        self, interval: float = 0.005, refresh: int = 10, tree: bool = True
    ) -> None:
        import psutil

        self._psutil = psutil
        self._interval = interval
        self._refresh = refresh
        self._me = psutil.Process()
        self._whole_tree = tree
        self._processes = self._tree()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.baseline = 0
        self.peak = 0

    def _tree(self) -> list[Any]:
        if not self._whole_tree:
            return [self._me]
        return [self._me, *self._me.children(recursive=True)]

    def _rss(self) -> int:
        total = 0
        for process in self._processes:
            with contextlib.suppress(self._psutil.Error):
                total += process.memory_info().rss
        return total

    def _sample(self) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            if count % self._refresh == 0:
                with contextlib.suppress(self._psutil.Error):
                    self._processes = self._tree()
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self._interval)

    @property
    def added_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def tree_cpu_seconds() -> float:
    """CPU time used so far by this process and its descendants, including
    children that have exited (ParallelRunner's pool): less sensitive than wall
    time to other load on the machine."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


@dataclass(frozen=True)
class Runs:
    """The runs of one pipeline with one runner."""

    #: Prepares a run outside the timer (a fresh catalog) and returns the call
    #: to time, which returns the run's result.
    prepare: Callable[[], Callable[[], Any]]
    #: The values of a result's outputs, read after the timer stopped.
    values: Callable[[Any], dict[str, Any]]
    #: On a Dask cluster: given the wall-clock time a run started, when the
    #: scheduler got its first graph message and when its first task started.
    timeline: Callable[[float], dict[str, float]] | None = None


def _kedro_runs(runner: Any, graph: pipelines.Graph, shared: bool) -> Runs:
    """Runs of ``graph`` with a Kedro runner: a fresh catalog for each run, and a
    hook manager as a ``KedroSession`` passes one (with no hooks registered)."""
    from kedro.framework.hooks.manager import _create_hook_manager

    pipeline = pipelines.kedro_pipeline(graph)

    def prepare() -> Callable[[], Any]:
        catalog = pipelines.kedro_catalog(graph, shared_memory=shared)
        hook_manager = _create_hook_manager()
        return lambda: runner.run(pipeline, catalog, hook_manager)

    return Runs(prepare, lambda result: {n: d.load() for n, d in result.items()})


def _raw_runs(client: Any, graph: pipelines.Graph) -> Runs:
    """Runs of ``graph`` as plain ``client.submit`` calls: the floor for Dask."""

    def run() -> dict[str, Any]:
        if graph.from_the_driver is not None:
            return graph.from_the_driver(client)
        futures = pipelines.submit_raw(client, graph, uuid.uuid4().hex[:12])
        return dict(zip(futures, client.gather(list(futures.values())), strict=True))

    return Runs(lambda: run, lambda result: result)


@contextlib.contextmanager
def _runs_of(
    runner: str, graph: pipelines.Graph, setup: dict[str, float]
) -> Iterator[Runs]:
    """Yields the runs of ``graph`` with ``runner``; what the runner needs before
    its first run (a cluster, a manager process) is timed into ``setup``."""
    if runner == "sequential":
        from kedro.runner import SequentialRunner

        yield _kedro_runs(SequentialRunner(), graph, shared=False)
    elif runner == "thread":
        from kedro.runner import ThreadRunner

        yield _kedro_runs(ThreadRunner(max_workers=report.WORKERS), graph, shared=False)
    elif runner == "parallel":
        from kedro.runner import ParallelRunner

        started = time.perf_counter()
        parallel = ParallelRunner(max_workers=report.WORKERS)
        setup["start"] = time.perf_counter() - started
        try:
            yield _kedro_runs(parallel, graph, shared=True)
        finally:
            started = time.perf_counter()
            parallel._manager.shutdown()
            setup["close"] = time.perf_counter() - started
    else:
        yield from _dask_runs(runner, graph, setup)


def _dask_runs(
    runner: str, graph: pipelines.Graph, setup: dict[str, float]
) -> Iterator[Runs]:
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    cluster = LocalCluster(
        n_workers=report.WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
    )
    # Raw distributed's client; for DaskRunner (which connects its own) only an
    # observer of the scheduler.
    client = Client(cluster, set_as_default=False)
    setup["start"] = time.perf_counter() - started
    client.register_plugin(_compute_starts(), name=COMPUTE_STARTS)
    try:
        if runner == "distributed":
            runs = _raw_runs(client, graph)
        else:
            from iris_dask.runner import DaskRunner

            dask = DaskRunner(
                address=cluster.scheduler_address,
                upload_project=False,
                is_async=runner == "dask_async",
            )
            runs = _kedro_runs(dask, graph, shared=False)
        yield dataclasses.replace(runs, timeline=partial(_timeline, client))
    finally:
        started = time.perf_counter()
        client.close()
        cluster.close()
        setup["close"] = time.perf_counter() - started


#: The worker plugin recording when tasks start computing (``_compute_starts``).
COMPUTE_STARTS = "benchmark-compute-starts"


def _compute_starts() -> Any:
    """A worker plugin recording when each task starts computing, by this
    machine's clock. The task stream's times are shifted by each worker's
    estimate of its clock's offset from the scheduler's, which is tens of ms off
    on a busy machine: a task could seem to start before the scheduler had its
    graph. (Defined here: ``distributed`` is imported only for Dask runs.)"""
    from distributed.diagnostics.plugin import WorkerPlugin

    class ComputeStarts(WorkerPlugin):
        name = COMPUTE_STARTS

        def setup(self, worker: Any) -> None:
            self.starts: list[float] = []

        def transition(self, key: Any, start: str, finish: str, **_: Any) -> None:
            if finish == "executing":
                self.starts.append(time.time())

    return ComputeStarts()


def _timeline(client: Any, since: float) -> dict[str, float]:
    """Seconds from ``since`` (wall clock) until the scheduler got the run's first
    graph message, and until the run's first task started computing."""

    def graphs_received(dask_scheduler: Any) -> list[float]:
        return [c.start for c in dask_scheduler.computations if c.start >= since]

    def compute_starts(dask_worker: Any) -> list[float]:
        return [t for t in dask_worker.plugins[COMPUTE_STARTS].starts if t >= since]

    starts = [t for found in client.run(compute_starts).values() for t in found]
    return {
        "graph_at_scheduler": min(client.run_on_scheduler(graphs_received)) - since,
        "first_node_started": min(starts) - since,
    }


def _graph(config: dict[str, Any]) -> pipelines.Graph:
    if config["pipeline"] == "A":
        return pipelines.overhead(config["size"])
    if config["pipeline"] == "B":
        return pipelines.cpu_wide(config["size"])
    if config["pipeline"] == "E":
        return pipelines.dask_collection(config["size"])
    return pipelines.data_chain(config["size"])


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Runs one configuration: warm-up runs, then timed runs."""
    _quiet_logging()
    graph = _graph(config)
    track_memory = config["pipeline"] in ("C", "E")
    # A on Dask: the driver's own peak (the LocalCluster's scheduler runs in it)
    # and when the scheduler got the graph and started the first node.
    at_scale = config["pipeline"] == "A" and config["runner"] in DASK_RUNNERS
    setup: dict[str, float] = {}
    times, cpu, peaks, values = [], [], [], None
    driver_peaks: list[float] = []
    timelines: list[dict[str, float]] = []
    with _runs_of(config["runner"], graph, setup) as runs:
        for index in range(config["warmup"] + config["repeat"]):
            run = runs.prepare()
            gc.collect()
            memory = PeakMemory(tree=not at_scale) if track_memory or at_scale else None
            with memory or contextlib.nullcontext():
                cpu_before = tree_cpu_seconds()
                wall_start = time.time()
                started = time.perf_counter()
                result = run()
                elapsed = time.perf_counter() - started
                cpu_used = tree_cpu_seconds() - cpu_before
            values = runs.values(result)
            del result, run
            if index >= config["warmup"]:
                times.append(elapsed)
                cpu.append(cpu_used)
                if memory is not None and track_memory:
                    peaks.append(memory.added_mb)
                if memory is not None and at_scale:
                    driver_peaks.append(memory.peak_mb)
                if at_scale and runs.timeline is not None:
                    timelines.append(runs.timeline(wall_start))
    return {
        **config,
        "variant": graph.name,
        "nodes": len(graph.steps),
        "times": times,
        "cpu": cpu,
        "peak_added_mb": peaks or None,
        "driver_peak_mb": driver_peaks or None,
        "timelines": timelines or None,
        "setup": setup,
        "outputs": repr(sorted((values or {}).items())),
    }


def measure_kedro_runs(
    runners: list[str],
    project: Path,
    warmup: int,
    repeat: int,
    env: dict[str, str],
    kedro_env: str | None = None,
) -> list[dict[str, Any]]:
    """D: times whole ``kedro run`` commands in a copy of the rendered project, with
    the project's own logging, deleting the outputs before every run. The runners
    take turns, run after run, so that a machine getting slower or faster during
    the measurement shifts all of them alike."""
    kedro = Path(sys.executable).parent / "kedro"
    commands = {runner: [str(kedro), "run"] for runner in runners}
    for command in commands.values():
        command.extend([f"--env={kedro_env}"] if kedro_env else [])
    if "dask" in commands:
        commands["dask"].append(f"--runner={DASK_RUNNER}")
    times: dict[str, list[float]] = {runner: [] for runner in runners}
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="bench-d-") as folder:
        copy = Path(shutil.copytree(project, Path(folder) / "project"))
        for index in range(warmup + repeat):
            for runner, command in commands.items():
                elapsed = _timed_kedro_run(command, copy, env)
                if index >= warmup:
                    times[runner].append(elapsed)
                report_file = copy / "data/08_reporting/model_comparison.csv"
                outputs[runner] = report_file.read_text()
    return [
        {
            "runner": runner,
            "pipeline": "D",
            "size": None,
            "repeat": repeat,
            "warmup": warmup,
            "variant": "D",
            "nodes": None,
            "times": times[runner],
            "cpu": None,
            "peak_added_mb": None,
            "setup": {},
            "outputs": outputs[runner],
        }
        for runner in runners
    ]


def _timed_kedro_run(command: list[str], project: Path, env: dict[str, str]) -> float:
    for name in _OUTPUT_FOLDERS:
        for path in (project / "data" / name).iterdir():
            if path.is_dir():
                shutil.rmtree(path)  # a dask dataset: one file per partition
            elif path.name != ".gitkeep":
                path.unlink()
    (project / "info.log").unlink(missing_ok=True)
    started = time.perf_counter()
    finished = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if finished.returncode != 0:
        raise BenchmarkError(
            f"{shlex.join(command)} failed:\n{finished.stdout[-3000:]}"
            f"{finished.stderr[-3000:]}"
        )
    return elapsed


# --- The suite, in the parent process ------------------------------------------------


def calibrate_burn(seconds: float) -> int:
    """Iterations of ``pipelines.burn`` that take about ``seconds`` here; every
    runner then gets the same count."""
    iterations = 200_000
    while True:
        started = time.perf_counter()
        pipelines.burn(iterations)
        elapsed = time.perf_counter() - started
        if elapsed > 0.2:
            return max(1, round(iterations * seconds / elapsed))
        iterations *= 2


def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every runner x pipeline (x size) but D's that the arguments ask for, in
    run order: by pipeline, then size, so that the runners compared at one size
    run minutes apart at most, not across the whole pipeline (this machine's
    speed drifts by tens of percent within the hour)."""
    common = {"repeat": args.repeat, "warmup": args.warmup}
    configs = []
    for pipeline in (p for p in args.pipelines if p != "D"):  # D: measure_kedro_runs
        runners = report.PIPELINE_RUNNERS[pipeline]
        for runner in (r for r in runners if r in args.runners):
            if pipeline == "A" and runner == "parallel":
                sizes = args.parallel_a_nodes
            elif pipeline == "A" and runner in DASK_RUNNERS:
                sizes = [*args.a_nodes, *args.dask_a_nodes]
            elif pipeline == "A":
                sizes = args.a_nodes
            elif pipeline == "B":
                sizes = [args.b_iterations]
            elif pipeline == "E":
                sizes = args.e_megabytes
            else:
                sizes = args.c_megabytes
            for size in sizes:
                config = {"runner": runner, "pipeline": pipeline, "size": size}
                configs.append({**config, **common})
    order = list(args.pipelines)
    return sorted(configs, key=lambda c: (order.index(c["pipeline"]), c["size"]))


def run_configuration(
    config: dict[str, Any], env: dict[str, str], logs: Path, timeout: float
) -> dict[str, Any]:
    """Measures ``config`` in a fresh process (its own process group, so nothing
    it started outlives it) and returns its result."""
    label = f"{config['runner']}-{config['pipeline']}-{config['size']}"
    log_path = logs / f"{label}.log"
    result_path = logs / f"{label}.json"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--measure"]
    command += [json.dumps(config), "--result", str(result_path)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise BenchmarkError(f"{label} did not finish in {timeout:g} s") from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    if process.returncode != 0 or not result_path.exists():
        tail = log_path.read_text()[-4000:]
        raise BenchmarkError(f"{label} failed (exit {process.returncode}):\n{tail}")
    return json.loads(result_path.read_text())  # type: ignore[no-any-return]


def check_outputs(results: list[dict[str, Any]]) -> None:
    """Every runner must compute the same outputs for the same pipeline."""
    seen: dict[str, tuple[str, str]] = {}
    for result in results:
        key = result["variant"]
        if key in seen and seen[key][1] != result["outputs"]:
            raise BenchmarkError(
                f"{result['runner']} and {seen[key][0]} disagree on the outputs "
                f"of {key}: {result['outputs'][:200]} != {seen[key][1][:200]}"
            )
        seen.setdefault(key, (result["runner"], result["outputs"]))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib.metadata import PackageNotFoundError, version

    import psutil

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("kedro", "distributed", "dask", "numpy", "pandas", "psutil"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return {
        "cpu": model,
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def _command_line(argv: list[str]) -> str:
    """``argv`` as it could be typed at the repository root: paths inside the
    repository relative to it, without the option nox adds to label the page."""
    shown, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--invoked-as"):
            skip = arg == "--invoked-as"
            continue
        for prefix in ("", "--doc=", "--output-dir=", "--project="):
            if arg.startswith(prefix + str(ROOT) + os.sep):
                arg = prefix + arg[len(prefix) + len(str(ROOT)) + 1 :]
        shown.append(arg)
    return shlex.join(["python", *shown])


class OtherLoad:
    """How much CPU other processes used while the suite ran: the system's busy
    CPU time minus this process tree's, averaged over the wall time. The suite's
    own processes are all waited for, so their CPU time is counted as ours."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        import psutil

        system = psutil.cpu_times()
        busy = sum(system) - system.idle - getattr(system, "iowait", 0.0)
        own = sum(psutil.Process().cpu_times()[:4])
        return time.monotonic(), busy, own

    def cores(self) -> float:
        """Average number of cores other processes kept busy so far."""
        wall_0, busy_0, own_0 = self._start
        wall, busy, own = self._sample()
        return max(0.0, (busy - busy_0) - (own - own_0)) / max(wall - wall_0, 1e-9)


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every configuration, one process each, and collects the results."""
    meta: dict[str, Any] = {
        "command": _command_line(sys.argv),
        "invoked_as": args.invoked_as,
        "machine": machine(),
        "load_before": _load_average(),
        "settings": {
            "repeat": args.repeat,
            "warmup": args.warmup,
            "a_nodes": args.a_nodes,
            "dask_a_nodes": args.dask_a_nodes,
            "parallel_a_nodes": args.parallel_a_nodes,
            "c_megabytes": args.c_megabytes,
            "e_megabytes": args.e_megabytes,
            "d_env": args.d_env,
        },
    }
    other_load = OtherLoad()
    meta["settings"]["b_calibrated"] = args.b_iterations is None
    if "B" in args.pipelines and args.b_iterations is None:
        args.b_iterations = calibrate_burn(args.b_seconds)
    meta["settings"]["b_iterations"] = args.b_iterations
    meta["settings"]["b_seconds"] = args.b_seconds
    output = Path(args.output_dir)
    logs = output / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.project:
            project = Path(args.project).resolve()
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
            project = render_as_is(Path(folder))
        # D runs `kedro run` as a user would: their environment, telemetry off.
        user_env = {**os.environ, **QUIET_ENV}
        # A-C, E: Dask's own log level in the worker processes, and the importable
        # benchmark pipelines and project for Dask's worker processes.
        paths = [str(ROOT), str(project / "src"), os.environ.get("PYTHONPATH")]
        bench_env = {
            **user_env,
            "DASK_LOGGING__DISTRIBUTED": "warning",
            "PYTHONPATH": os.pathsep.join(filter(None, paths)),
        }
        configs = configurations(args)
        results = []
        for number, config in enumerate(configs, 1):
            label = f"{config['runner']} x {config['pipeline']}"
            if config["size"] is not None:
                label += f" ({config['size']})"
            print(f"[{number}/{len(configs)}] {label} ...", file=sys.stderr, flush=True)
            result = run_configuration(config, bench_env, logs, args.timeout)
            results.append(result)
            print(f"    {report.summary_line(result)}", file=sys.stderr, flush=True)
        d_runners = [r for r in report.PIPELINE_RUNNERS["D"] if r in args.runners]
        if "D" in args.pipelines and d_runners:
            print(f"[D] {' / '.join(d_runners)}, taking turns ...", file=sys.stderr)
            for result in measure_kedro_runs(
                d_runners, project, args.warmup, args.repeat, user_env, args.d_env
            ):
                results.append(result)
                print(
                    f"    {result['runner']}: {report.summary_line(result)}",
                    file=sys.stderr,
                    flush=True,
                )
    check_outputs(results)
    meta["load_after"] = _load_average()
    meta["other_load_cores"] = round(other_load.cores(), 2)
    return {"meta": meta, "results": results}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs first (default 1)"
    )
    parser.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    parser.add_argument(
        "--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES)
    )
    parser.add_argument(
        "--a-nodes",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="sizes of pipeline A, multiples of 10 (default 100 1000)",
    )
    parser.add_argument(
        "--dask-a-nodes",
        type=int,
        nargs="*",
        default=[10_000],
        help="further sizes of A for DaskRunner and raw distributed only: Kedro's "
        "runners take O(N²) (default 10000)",
    )
    parser.add_argument(
        "--parallel-a-nodes",
        type=int,
        nargs="+",
        default=[100, 300],
        help="sizes of A for ParallelRunner, which needs ~0.2 s per node "
        "(default 100 300)",
    )
    parser.add_argument(
        "--b-seconds",
        type=float,
        default=0.5,
        help="CPU seconds of each of B's 8 nodes, calibrated here (default 0.5)",
    )
    parser.add_argument(
        "--b-iterations", type=int, help="loop iterations of B's nodes (no calibration)"
    )
    parser.add_argument(
        "--c-megabytes",
        type=int,
        nargs="+",
        default=[10, 100],
        help="array sizes of pipeline C in MiB (default 10 100)",
    )
    parser.add_argument(
        "--e-megabytes",
        type=int,
        nargs="+",
        default=[1536],
        help="sizes of pipeline E's dask.dataframe in MiB (default 1536)",
    )
    parser.add_argument(
        "--d-env",
        help="the Kedro environment of D's runs (default: the project's own "
        "settings; `test` for the example's small ones)",
    )
    parser.add_argument(
        "--output-dir",
        default=str(ROOT / "benchmarks" / "results"),
        help="where results.json, results.md and the logs go",
    )
    parser.add_argument("--doc", help="also write the full report here")
    parser.add_argument(
        "--from-json",
        help="measure nothing: rewrite results.md (and --doc) from the "
        "results.json of an earlier run",
    )
    parser.add_argument(
        "--project", help="a rendered project to use (default: render the template)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds one configuration may take (default 1800)",
    )
    parser.add_argument("--invoked-as", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be >= 1 and --warmup >= 0")
    for size in [*args.a_nodes, *args.dask_a_nodes, *args.parallel_a_nodes]:
        if size < pipelines.WIDTH or size % pipelines.WIDTH:
            parser.error(f"sizes of A must be multiples of {pipelines.WIDTH}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        result = measure(json.loads(args.measure))
        Path(args.result).write_text(json.dumps(result))
        return 0
    output = Path(args.output_dir)
    if args.from_json:
        suite = json.loads(Path(args.from_json).read_text())
    else:
        try:
            suite = run_suite(args)
        except BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        (output / "results.json").write_text(json.dumps(suite, indent=1))
    output.mkdir(parents=True, exist_ok=True)
    tables = report.tables(suite)
    (output / "results.md").write_text(tables)
    print(tables)
    if args.doc:
        doc = Path(args.doc)
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(report.document(suite))
        print(f"Wrote {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
