"""DaskRunner gives what SequentialRunner gives: outputs, hook calls, failures.

Every case runs under both runners, each from a fresh copy of its catalog, on a
cluster of worker processes and on one of threads.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster
from distributed.stealing import fast_tasks
from kedro.io import CachedDataset, DataCatalog, DatasetError, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from kedro_datasets.pandas import CSVDataset
from pluggy import PluginManager

from {{ cookiecutter.python_package }}.runner import DaskRunner, DaskSetupError

from . import parity_pipelines as cases

RESUME_HINT = "--from-nodes"


def dask_runner(cluster: LocalCluster, **options: Any) -> DaskRunner:
    return DaskRunner(
        address=cluster.scheduler_address, upload_project=False, **options
    )


def run_case(
    runner: Any,
    case: cases.Case,
    folder: Path,
    hook_manager: PluginManager,
    hook_log: Path,
    **run_options: Any,
) -> tuple[dict[str, bytes], dict[str, Any], Counter]:
    """Runs ``case`` with ``runner`` in ``folder``; returns the persisted files,
    the free outputs' data and the hook calls."""
    folder.mkdir(parents=True, exist_ok=True)
    hook_log.write_text("")
    result = runner.run(
        case.pipeline,
        case.catalog(folder),
        hook_manager,
        run_id="parity",
        **run_options,
    )
    files = {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
    free = {
        name: dataset.load()
        for name, dataset in result.items()
        if isinstance(dataset, MemoryDataset)
    }
    calls = Counter(hook_log.read_text().splitlines())
    return files, free, calls


@pytest.mark.parametrize("case", cases.PARITY_CASES, ids=str)
def test_same_outputs_and_hook_calls(case, cluster, hook_manager, hook_log, tmp_path):
    expected = run_case(
        SequentialRunner(), case, tmp_path / "seq", hook_manager, hook_log
    )
    actual = run_case(
        dask_runner(cluster), case, tmp_path / "dask", hook_manager, hook_log
    )

    assert actual[0] == expected[0], "persisted outputs differ"
    assert actual[1] == expected[1], "free outputs differ"
    assert actual[2] == expected[2], "hook calls differ"
    assert expected[2], "the recording hooks did not fire at all"


def test_free_outputs_are_returned(cluster, hook_manager, hook_log, tmp_path):
    _, free, _ = run_case(
        dask_runner(cluster), cases.several_outputs(), tmp_path, hook_manager, hook_log
    )
    assert free == {"high": 8, "single": 7}


def test_async_loading_and_saving(cluster, hook_manager, hook_log, tmp_path):
    case = cases.fan_out_fan_in()
    expected = run_case(
        SequentialRunner(is_async=True), case, tmp_path / "seq", hook_manager, hook_log
    )
    actual = run_case(
        dask_runner(cluster, is_async=True),
        case,
        tmp_path / "dask",
        hook_manager,
        hook_log,
    )
    assert actual == expected


def test_only_missing_outputs_skips_what_sequential_skips(
    cluster, hook_manager, hook_log, tmp_path
):
    case = cases.resumable()
    previous = tmp_path / "previous"
    run_case(SequentialRunner(), case, previous, hook_manager, hook_log)
    (previous / "final.json").unlink()
    runs = {}
    for name, runner in (("seq", SequentialRunner()), ("dask", dask_runner(cluster))):
        shutil.copytree(previous, tmp_path / name)
        runs[name] = run_case(
            runner,
            case,
            tmp_path / name,
            hook_manager,
            hook_log,
            only_missing_outputs=True,
        )
    ran = {
        line.split("\t")[1]
        for line in runs["dask"][2]
        if line.startswith("before_node_run")
    }
    assert ran == {"finish"}
    assert runs["dask"] == runs["seq"]


def test_a_rerun_node_loads_the_version_saved_in_the_run(
    cluster, hook_manager, tmp_path
):
    """Kedro's check for missing outputs finds the latest version and caches it: the
    consumer's copy on a worker must not load that one after the producer saved."""
    previous = tmp_path / "previous"
    first = cases.versioned_rerun(1)
    SequentialRunner().run(first.pipeline, first.catalog(previous), hook_manager)
    (previous / "marker.json").unlink()
    (previous / "used.json").unlink()
    used = {}
    for name, runner in (("seq", SequentialRunner()), ("dask", dask_runner(cluster))):
        folder = shutil.copytree(previous, tmp_path / name)
        case = cases.versioned_rerun(5)
        catalog = case.catalog(folder)
        runner.run(case.pipeline, catalog, hook_manager, only_missing_outputs=True)
        used[name] = (folder / "used.json").read_text()
    assert used == {"seq": "6", "dask": "6"}


def test_a_node_confirms_what_another_node_read(cluster, hook_manager, tmp_path):
    """A partition arriving after the read is not checkpointed as processed."""
    checkpoints = {}
    for name, runner in (("seq", SequentialRunner()), ("dask", dask_runner(cluster))):
        case = cases.confirmed_downstream()
        runner.run(case.pipeline, case.catalog(tmp_path / name), hook_manager)
        checkpoints[name] = (tmp_path / name / "incoming" / "CHECKPOINT").read_text()
    assert checkpoints == {"seq": "p2.csv", "dask": "p2.csv"}


def test_a_node_left_alone_to_confirm_a_dataset_confirms_it(
    cluster, hook_manager, tmp_path
):
    """As Kedro's resume hint, ``--from-nodes report``, leaves it: no node loads it."""
    checkpoints = {}
    for name, runner in (("seq", SequentialRunner()), ("dask", dask_runner(cluster))):
        case = cases.confirmed_downstream()
        catalog = case.catalog(tmp_path / name)
        catalog["later"] = MemoryDataset(["p0.csv"])
        runner.run(case.pipeline.from_nodes("report"), catalog, hook_manager)
        checkpoints[name] = (tmp_path / name / "incoming" / "CHECKPOINT").read_text()
    assert checkpoints == {"seq": "p2.csv", "dask": "p2.csv"}


@pytest.mark.parametrize("exit", [SystemExit(3), KeyboardInterrupt("stop")], ids=str)
def test_a_node_ending_python_ends_the_run_as_in_sequential(
    exit, process_cluster, hook_manager, tmp_path
):
    """A library calling ``sys.exit`` must not kill worker after worker."""
    pipeline = Pipeline([Node(cases.raising(exit), "seed", "out")])
    for runner in (SequentialRunner(), dask_runner(process_cluster)):
        with pytest.raises(type(exit)) as raised:
            runner.run(pipeline, cases._catalog({"seed": MemoryDataset(1)}))
        assert raised.value.args == exit.args
        assert getattr(raised.value, "code", None) == getattr(exit, "code", None)


def test_partitions_a_node_made_are_read_and_confirmed_as_in_sequential(
    cluster, hook_manager, tmp_path
):
    found = {}
    for name, runner in (("seq", SequentialRunner()), ("dask", dask_runner(cluster))):
        case = cases.produced_then_confirmed()
        result = runner.run(case.pipeline, case.catalog(tmp_path / name), hook_manager)
        checkpoint = (tmp_path / name / "incoming" / "CHECKPOINT").read_text()
        found[name] = (result["names"].load(), checkpoint)
    assert found["dask"] == found["seq"]
    assert len(found["seq"][0]) == 3  # noqa: PLR2004 (p0 and the two made)


def test_catalog_validators_check_what_nodes_load_and_save_as_in_sequential(
    cluster, hook_manager, tmp_path
):
    outcomes: dict[str, list] = {"seq": [], "dask": []}
    for seed in (-2, 8):  # made 2 as it loads; 16 refused as it saves
        for name, runner in (
            ("seq", SequentialRunner()),
            ("dask", dask_runner(cluster)),
        ):
            folder = tmp_path / f"{name}{seed}"
            folder.mkdir()
            case = cases.validated(seed)
            try:
                runner.run(case.pipeline, case.catalog(folder), hook_manager)
            except Exception as error:  # noqa: BLE001 (its type is compared)
                outcomes[name].append(type(error).__name__)
            doubled = folder / "doubled.json"
            outcomes[name].append(doubled.read_text() if doubled.exists() else None)
    assert outcomes["dask"] == outcomes["seq"] == ["4", "DataValidationError", None]


def test_a_runtime_pattern_of_the_catalog_class_gives_its_own_dataset(
    cluster, hook_manager, tmp_path
):
    """Names are matched pattern by pattern (each name here matches one: Kedro
    tries runtime patterns in no set order), not all taken as the first one's."""
    pipeline = Pipeline(
        [
            Node(cases.make_items, None, "mem_a", name="make_a"),
            Node(cases.make_items, None, "z_pickled", name="make_z"),
            Node(cases.count_after, ["z_pickled", "mem_a"], "mem_n", name="count"),
        ]
    )
    for name, runner in (("seq", SequentialRunner()), ("dask", dask_runner(cluster))):
        pickled = str(tmp_path / name / "{name}.pkl")

        class PatternCatalog(DataCatalog):
            default_runtime_patterns = {  # noqa: RUF012 (as Kedro declares it)
                "{name}_pickled": {"type": "pickle.PickleDataset", "filepath": pickled},
                "mem_{name}": {"type": "kedro.io.MemoryDataset"},
            }

        runner.run(pipeline, PatternCatalog(), hook_manager)
        assert (tmp_path / name / "z.pkl").exists(), name


def test_a_transcoded_name_left_out_of_the_catalog_fails_as_in_sequential(
    cluster, hook_manager, tmp_path
):
    """Kedro makes `table@text` a MemoryDataset, which no node saves."""
    pipeline = cases.transcoded().pipeline
    for name, runner in (("seq", SequentialRunner()), ("dask", dask_runner(cluster))):
        table = CSVDataset(filepath=str(tmp_path / f"{name}.csv"))
        catalog = cases._catalog({"table@pandas": table})
        with pytest.raises(DatasetError, match="table@text: Data for MemoryDataset"):
            runner.run(pipeline, catalog, hook_manager)
        assert table.exists(), "the node before did not run"


def test_data_that_cannot_travel_fails_its_node_as_in_sequential(
    process_cluster, hook_manager, tmp_path
):
    """Dask would hang its consumer on another worker (dask/distributed#6705)."""
    case = cases.unsendable()
    for runner in (SequentialRunner(), dask_runner(process_cluster)):
        with pytest.raises(DatasetError, match="lock"):
            runner.run(case.pipeline, case.catalog(tmp_path), hook_manager)


def test_a_single_process_dataset_is_refused_saying_what_to_run_instead(
    cluster, hook_manager, tmp_path
):
    """Workers, in threads too, get copies: a CachedDataset's cache would be theirs."""
    pipeline = Pipeline([Node(cases.double, "seed", "doubled", name="double")])
    catalog = cases._catalog({"seed": MemoryDataset(2)})
    catalog["doubled"] = CachedDataset(MemoryDataset())
    with pytest.raises(DaskSetupError, match=r"'doubled': CachedDataset only .*Thr"):
        dask_runner(cluster).run(pipeline, catalog, hook_manager)


def test_objects_that_cannot_travel_in_a_dataframe_fail_their_node(
    process_cluster, hook_manager, tmp_path
):
    """SequentialRunner passes the DataFrame on; Dask would hang a consumer on
    another worker, so the node fails, naming what cannot travel."""
    case = cases.framed_unsendable()
    with pytest.raises(DatasetError, match=r"frame: .*'frame_locks'.*lock"):
        dask_runner(process_cluster).run(
            case.pipeline, case.catalog(tmp_path), hook_manager
        )


def test_an_output_the_driver_cannot_load_is_named_with_its_node(
    process_cluster, hook_manager, tmp_path
):
    """Not an error from deep inside Dask as it gathers the run's outputs."""
    case = cases.worker_only()
    with pytest.raises(DatasetError, match="No worker found"):
        SequentialRunner().run(case.pipeline, case.catalog(tmp_path), hook_manager)
    expected = r"worker_only: Kedro node 'make_it' returned data this process cannot"
    with pytest.raises(DatasetError, match=expected) as raised:
        runner = dask_runner(process_cluster)
        runner.run(case.pipeline, case.catalog(tmp_path), hook_manager)
    assert "No worker found" in str(raised.value)


def test_an_input_never_filled_fails_its_consumer_naming_it(
    cluster, hook_manager, hook_log, tmp_path
):
    """A registered in-memory input nobody filled (a partial run): the nodes that can
    run do, then its consumer fails with Kedro's error, naming the dataset."""
    pipeline = Pipeline(
        [
            Node(cases.double, "seed", "ready", name="ready"),
            Node(cases.add, ["ready", "empty"], "never", name="consumer"),
        ]
    )
    case = cases.Case(
        "never_filled",
        pipeline,
        lambda f: cases._catalog(
            {
                "seed": MemoryDataset(3),
                "empty": MemoryDataset(),
                **cases._json(f, "ready"),
            }
        ),
    )
    errors = {}
    for name, runner in (("seq", SequentialRunner()), ("dask", dask_runner(cluster))):
        with pytest.raises(DatasetError) as raised:
            run_case(runner, case, tmp_path / name, hook_manager, hook_log)
        errors[name] = str(raised.value)
        assert (tmp_path / name / "ready.json").read_text() == "6"
    assert errors["dask"] == errors["seq"]
    assert errors["seq"].startswith("empty: ")


def test_failing_node_fails_like_sequential(
    cluster, hook_manager, hook_log, tmp_path, caplog
):
    case = cases.failing()
    with pytest.raises(ValueError) as expected:
        run_case(SequentialRunner(), case, tmp_path / "seq", hook_manager, hook_log)
    sequential_calls = Counter(hook_log.read_text().splitlines())

    caplog.set_level(logging.WARNING)
    with pytest.raises(ValueError) as actual:
        run_case(dask_runner(cluster), case, tmp_path / "dask", hook_manager, hook_log)
    dask_calls = Counter(hook_log.read_text().splitlines())

    assert str(actual.value) == str(expected.value) == "boom while handling 2"
    if sys.version_info >= (3, 11):
        assert "failing_node" in " ".join(actual.value.__notes__)
    assert RESUME_HINT in caplog.text and "failing_node" in caplog.text
    assert dask_calls == sequential_calls
    assert "on_node_error\tfailing_node\tValueError" in dask_calls
    assert not any("after_failure" in call for call in dask_calls)
    assert (tmp_path / "dask" / "saved.json").read_text() == "2"
    assert not (tmp_path / "dask" / "never.json").exists()


def test_an_error_holding_what_cannot_be_pickled_keeps_its_type(
    cluster, hook_manager, hook_log, tmp_path
):
    """distributed would send it as a bare Exception naming it."""
    case = cases.failing_with_a_lock()
    with pytest.raises(cases.LockedError) as expected:
        run_case(SequentialRunner(), case, tmp_path / "seq", hook_manager, hook_log)
    with pytest.raises(cases.LockedError) as actual:
        run_case(dask_runner(cluster), case, tmp_path / "dask", hook_manager, hook_log)
    assert str(actual.value) == str(expected.value) == "locked while handling 1"
    assert isinstance(actual.value.__cause__, ValueError)

    case = cases.failing_with_a_lock(cases.fail_with_a_lock_in_its_args)
    with pytest.raises(cases.LockedError) as in_its_args:
        run_case(dask_runner(cluster), case, tmp_path / "args", hook_manager, hook_log)
    message, lock = in_its_args.value.args
    assert message == "locked while handling 1" and "lock object" in lock


def test_node_logs_reach_the_driver(cluster, hook_manager, hook_log, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_case(
        dask_runner(cluster), cases.with_logging(), tmp_path, hook_manager, hook_log
    )
    records = [r for r in caplog.records if r.name == cases.logger.name]
    assert [r.getMessage() for r in records] == ["log_and_double got 21"]
    assert any(
        r.getMessage().startswith("Completed 1 out of 1 nodes") for r in caplog.records
    )
    # A field given with `extra=` reaches a handler formatting it, as it shows here.
    assert logging.Formatter("%(tags)s").format(records[0]) == "('a', 'b')"


def test_a_record_from_a_thread_a_node_left_running_reaches_the_driver(caplog):
    """The thread logs after its node returned, while another node runs on the
    other worker: its worker has no node of the run under way."""
    caplog.set_level(logging.INFO)
    pipeline = Pipeline(
        [
            Node(cases.log_later, "seed", "started", name="starts_a_thread"),
            Node(cases.wait_then_double, "seed", "waited", name="waits"),
        ]
    )
    runner = DaskRunner(n_workers=2, threads_per_worker=1, dashboard_address=None)
    runner.run(pipeline, cases._catalog({"seed": MemoryDataset(5)}))
    messages = [r.getMessage() for r in caplog.records if r.name == cases.logger.name]
    assert messages == ["logged later, about 5"]


def test_a_logger_level_an_earlier_run_set_does_not_stay_on_the_workers(
    process_cluster, hook_manager, hook_log, tmp_path, caplog
):
    """As a new conf/logging.yml would, on a long-lived cluster: the first run's two
    nodes, one on each worker, log nothing; the second run's log."""
    caplog.set_level(logging.INFO)
    pipeline = Pipeline(
        [
            Node(cases.slowly_log_and_double, "seed", name, name=name)
            for name in ("first", "second")
        ]
    )
    node_logger = logging.getLogger(cases.logger.name)
    for level in (logging.ERROR, logging.NOTSET):
        node_logger.setLevel(level)
        catalog = cases._catalog({"seed": MemoryDataset(21)})
        dask_runner(process_cluster).run(pipeline, catalog, hook_manager)
    records = [r for r in caplog.records if r.name == cases.logger.name]
    assert [r.getMessage() for r in records] == ["log_and_double got 21"] * 2


def _warnings_shown(run: Callable[[], Any]) -> list[str]:
    """The warnings the driver showed while ``run`` ran, through its own filters:
    with Kedro's logging, those become records of 'py.warnings'."""
    with warnings.catch_warnings(record=True) as shown:
        run()
    return [str(warning.message) for warning in shown]


def _warning_run(cluster: LocalCluster, *seeds: int) -> list[str]:
    """Runs a node warning "warned about <seed>" for each seed: the warnings shown."""
    pipeline = Pipeline(
        [Node(cases.warn_and_double, f"s{s}", f"d{s}", name=f"w{s}") for s in seeds]
    )
    catalog = cases._catalog({f"s{s}": MemoryDataset(s) for s in seeds})
    return _warnings_shown(lambda: dask_runner(cluster).run(pipeline, catalog))


def test_every_run_on_long_lived_workers_shows_a_nodes_warning(process_cluster):
    """As SequentialRunner, in a new process every run: three runs on two worker
    processes, so one runs where a run showed the warning before."""
    shown = [_warning_run(process_cluster, 31) for _ in range(3)]
    assert shown == [["warned about 31"]] * 3


def test_a_warning_from_several_worker_processes_shows_once(process_cluster):
    """As in SequentialRunner's one process: each worker process keeps its own
    record of the warnings it has shown."""
    outputs = [f"pid{i}" for i in range(4)]
    pipeline = Pipeline(
        [Node(cases.warn_and_tell_pid, "seed", name, name=name) for name in outputs]
    )
    catalog = cases._catalog({"seed": MemoryDataset(61)})
    result: dict[str, Any] = {}
    shown = _warnings_shown(
        lambda: result.update(dask_runner(process_cluster).run(pipeline, catalog))
    )
    assert len({result[name].load() for name in outputs}) == 2, "one worker ran all"
    assert shown == ["warned about 61"]


def test_warning_filters_set_on_the_driver_apply_on_workers(process_cluster):
    """As settings.py, -W or PYTHONWARNINGS would in SequentialRunner's process."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="warned about 41")
        assert _warning_run(process_cluster, 41, 42) == ["warned about 42"]


def test_concurrent_runs_on_one_cluster_do_not_mix_their_data(
    cluster, hook_manager, tmp_path
):
    """Two runs of the same pipeline, dataset names included, at the same time:
    a runner that shares intermediates under their names would mix them up."""
    case = cases.long_chain(length=8, step=cases.slow_add_one)
    results: dict[int, Any] = {}

    def run(seed: int) -> None:
        catalog = case.catalog(tmp_path / str(seed))
        catalog["seed"] = seed
        results[seed] = dask_runner(cluster).run(case.pipeline, catalog, hook_manager)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (0, 1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert (tmp_path / "0" / "end.json").read_text() == "8"
    assert (tmp_path / "1000" / "end.json").read_text() == "1008"


def test_scheduler_holds_nothing_after_a_run(
    cluster, observer: Client, hook_manager, hook_log, tmp_path
):
    run_case(
        dask_runner(cluster), cases.several_outputs(), tmp_path, hook_manager, hook_log
    )

    assert tasks_left_on_scheduler(observer) == {}
    assert not observer.list_datasets()


def test_tasks_are_grouped_by_function_not_by_node(
    cluster, observer: Client, hook_manager, hook_log, tmp_path
):
    """Dask keeps state per key prefix: one per node slowed big pipelines down.
    The dashboard then shows one bar per function; the key still names the node."""

    def prefixes(dask_scheduler) -> list[str]:
        return list(dask_scheduler.task_prefixes)

    case = cases.long_chain(length=8)
    run_case(dask_runner(cluster), case, tmp_path, hook_manager, hook_log)

    prefixes_seen = set(observer.run_on_scheduler(prefixes))
    assert "add_one" in prefixes_seen
    assert not {node.name for node in case.pipeline.nodes} & prefixes_seen


def test_each_output_of_a_node_is_taken_out_where_the_node_ran(
    process_cluster, hook_manager, hook_log, tmp_path
):
    """A node with several outputs returns them in one tuple, and a small task
    takes each one out. Those tasks must run where the tuple is: when they shared
    one Dask task group, the scheduler took them for root tasks and spread them
    over the workers, each of which then fetched the whole tuple; and Dask's work
    stealing must not move them (it did, on a busy machine, while it took each for
    a task of 0.5 s: the default for a task prefix it has not timed yet)."""
    case = cases.many_outputs()
    runner = dask_runner(process_cluster)
    _, free, _ = run_case(runner, case, tmp_path, hook_manager, hook_log)
    assert free == {f"length_{i}": cases.PART_BYTES for i in range(cases.PARTS)}

    def keys_fetched(dask_worker) -> list[str]:
        return [
            str(key)
            for fetch in dask_worker.transfer_incoming_log
            for key in fetch["keys"]
        ]

    def prefixes(dask_scheduler) -> list[str]:
        return list(dask_scheduler.task_prefixes)

    with Client(process_cluster, set_as_default=False) as observer:
        fetched = [key for keys in observer.run(keys_fetched).values() for key in keys]
        splits = [p for p in observer.run_on_scheduler(prefixes) if "-output" in p]
    assert not [key for key in fetched if "-split_parts" in key]
    assert splits == [] and "split-stage" in fast_tasks  # never stolen


def tasks_left_on_scheduler(observer: Client) -> dict[str, str]:
    """The scheduler's tasks and their states, once it has had 5 s to forget the
    keys of a run's closed client (it does so soon after the client closes)."""

    def task_states(dask_scheduler) -> dict[str, str]:
        return {str(key): task.state for key, task in dask_scheduler.tasks.items()}

    deadline = time.monotonic() + 5
    while observer.run_on_scheduler(task_states) and time.monotonic() < deadline:
        time.sleep(0.05)
    return observer.run_on_scheduler(task_states)
