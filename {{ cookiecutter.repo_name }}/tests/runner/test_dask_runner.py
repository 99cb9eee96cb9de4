"""DaskRunner's settings, lifecycle and up-front checks."""

from __future__ import annotations

import _imp
import collections.abc
import contextlib
import gc
import logging
import os
import pickle
import re
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import dask.config
import distributed
import psutil
import pytest
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster
from distributed.core import Status
from distributed.deploy.spec import ProcessInterface
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset, Version
from kedro.pipeline import Node, Pipeline
from kedro_datasets.pickle import PickleDataset

from {{ cookiecutter.python_package }}.runner import (
    DaskClientConfig,
    DaskRunError,
    DaskRunner,
    DaskSetupError,
)
from {{ cookiecutter.python_package }}.runner.cluster import (
    cluster_factory,
    dask_client,
    in_the_clear,
)
from {{ cookiecutter.python_package }}.runner.dask_runner import add_memory_datasets
from {{ cookiecutter.python_package }}.runner.interrupts import CtrlCHeldBack
from {{ cookiecutter.python_package }}.runner.task_graph import SubmittedGraph
from {{ cookiecutter.python_package }}.runner.worker_hooks import environment_at_start

from . import parity_pipelines as cases


def _catalog(**data) -> DataCatalog:
    return DataCatalog(
        datasets={name: MemoryDataset(value) for name, value in data.items()}
    )


def _worker_name(_: object) -> str:
    return distributed.get_worker().name


def _run_plugins_here(_: object) -> bool:
    worker = distributed.get_worker()
    return any(name.startswith("kedro-run-") for name in worker.plugins)


def _two_parts(seed: int) -> tuple[int, int]:
    return seed, seed


def _slowly(value: int) -> int:
    time.sleep(1.5)
    return value + 1


def _doubled() -> Pipeline:
    return Pipeline([Node(cases.double, "seed", "doubled", name="double")])


def _worker_processes() -> set[psutil.Process]:
    """This process's children that run Dask's nannies and workers: spawned, or
    forked by the forkserver; not the long-lived resource tracker or forkserver."""
    workers = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in _command(child) or "forkserver" in _command(
                child.parent()
            ):
                workers.add(child)
        except psutil.NoSuchProcess:  # it ended while we looked
            pass
    return workers


def _command(process: psutil.Process) -> str:
    return " ".join(process.cmdline())


def _listening(_: object) -> set[tuple[str, int]]:
    """The addresses and ports this process accepts TCP connections on."""
    connections = psutil.Process().net_connections("tcp")
    return {tuple(c.laddr) for c in connections if c.status == psutil.CONN_LISTEN}


def _process_id(_: object) -> int:
    return os.getpid()


def _environment_variable(name: str) -> str | None:
    return os.environ.get(name)


def _parent_command(_: object) -> str:
    return _command(psutil.Process().parent())


def _how_the_worker_started(_: object) -> dict[str, bool]:
    return {
        "pipelines imported": PIPELINE_MODULE in sys.modules,
        "Ctrl-C blocked": signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []),
    }


class _PressedWhileCollected:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def _pressed_in_del_on_exit() -> collections.abc.Iterator[None]:
    yield
    _PressedWhileCollected()  # collected at once


PIPELINE_MODULE = "{{ cookiecutter.python_package }}.pipelines.iris.nodes"
#: Every Dask process a test starts listens on this machine only.
LOOPBACK = "127.0.0.1"


class TestSettings:
    def test_a_catch_all_dataset_pattern_is_not_taken_for_dask_client(self, tmp_path):
        path = str(tmp_path / "{d}.pkl")  # the pattern catches every name
        pattern = {"type": "pickle.PickleDataset", "filepath": path}
        catalog = DataCatalog.from_config({"{d}": pattern})
        catalog["seed"] = MemoryDataset(4)
        runner = DaskRunner(n_workers=1, processes=False, dashboard_address=None)
        runner.run(_doubled(), catalog)
        assert pickle.loads((tmp_path / "doubled.pkl").read_bytes()) == 8

    def test_a_local_cluster_that_cannot_start_names_where_its_keywords_go(self):
        runner = DaskRunner(n_workers="two", dashboard_address=None)
        with pytest.raises(DaskSetupError, match="Could not start .*LocalCluster") as e:
            runner.run(_doubled(), _catalog(seed=1))
        assert "Check the LocalCluster keywords in dask_client" in str(e.value)

    def test_a_runner_run_again_forgets_the_former_runs_dask_client(self):
        pipeline = Pipeline([Node(_process_id, "seed", "process")])
        runner = DaskRunner(n_workers=1, dashboard_address=f"{LOOPBACK}:0")
        in_threads = _catalog(seed=0)
        in_threads["params:dask_client"] = {"processes": False}
        assert runner.run(pipeline, in_threads)["process"].load() == os.getpid()
        assert runner.run(pipeline, _catalog(seed=0))["process"].load() != os.getpid()

    def test_unknown_key_is_named_with_the_valid_ones(self):
        with pytest.raises(DaskSetupError) as error:
            DaskRunner(adress="tcp://127.0.0.1:8786")
        message = str(error.value)
        assert "Unknown key(s) in dask_client: adress" in message
        assert "address" in message and "cluster_class" in message
        assert "n_workers" in message

    def test_old_docs_keys_size_the_local_cluster(self):
        config = DaskClientConfig.from_options(
            {"n_workers": 2, "threads_per_worker": 1, "direct_to_workers": True}
        )
        assert config.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1}
        assert config.client_kwargs == {"direct_to_workers": True}

    @pytest.mark.parametrize(
        "options",
        [
            {
                "address": "tcp://127.0.0.1:8786",
                "cluster_class": "distributed.LocalCluster",
            },
            {"address": "tcp://127.0.0.1:8786", "n_workers": 2},
            {"address": "tcp://127.0.0.1:8786", "adapt": {"maximum": 2}},
        ],
    )
    def test_address_and_a_cluster_to_start_contradict(self, options):
        with pytest.raises(DaskSetupError, match="both `address` and"):
            DaskRunner(**options)

    def test_unimportable_cluster_class_names_the_package(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # not installed
        with pytest.raises(DaskSetupError, match="pip install dask-jobqueue"):
            DaskRunner(cluster_class="dask_jobqueue.SLURMCluster")

    def test_a_cluster_class_may_be_a_method_that_returns_a_cluster(self):
        """e.g. dask_gateway.GatewayCluster.from_name, for a running cluster."""
        config = DaskClientConfig.from_options(
            {"cluster_class": "distributed.LocalCluster.from_name"}
        )
        assert (
            cluster_factory(config.cluster_class) == distributed.LocalCluster.from_name
        )

    def test_a_cluster_class_that_does_not_exist_is_named(self):
        with pytest.raises(DaskSetupError, match="'LocalCluster' has no 'from_nam'"):
            DaskRunner(cluster_class="distributed.LocalCluster.from_nam")

    @pytest.mark.parametrize(
        "options, words",
        [
            ({"timeout": 0}, "timeout must be a positive number"),
            ({"timeout": float("inf")}, "timeout must be a positive number"),
            ({"retries": -1}, "retries must be a whole number"),
            ({"retries": True}, "retries must be a whole number, got True"),
            ({"processes": "yes"}, "processes must be true or false, got 'yes'"),
            ({"adapt": {"minimum": "one"}}, "adapt.minimum must be a number"),
            ({"adapt": {"minimum": 5, "maximum": 1}}, "adapt.maximum must be at least"),
            ({"tag_resources": {"gpu": 1}}, "tag_resources.gpu must be a mapping"),
            ({"client_kwargs": {"asynchronous": True}}, "the runner manages it"),
            ({"security": {"tls_ca_fil": "x"}}, "security is not valid"),
            (
                {"security": {"tls_ca_file": "conf/ca.pem"}},
                r"security: no such file \(from .*\): tls_ca_file 'conf/ca.pem'",
            ),
            ({"install_wheel": "dist/missing.whl"}, "Run `kedro package`"),
            ({"install_requirements": True}, "needs dask_client.install_wheel"),
            ({"n_worker": 2}, r"dask_client: n_worker \(did you mean n_workers\?\)"),
            ({"cluster_kwargs": {"n_worker": 2}}, r"did you mean n_workers\?"),
            ({"client_kwargs": {"timeout": 5}}, r"set dask_client.timeout instead"),
            ({"cluster_class": "os.path"}, "'os.path' is a module, not a Dask cluster"),
            (
                {"install_wheel": "dist/x.whl", "upload_project": True},
                "both `upload_project: true` and `install_wheel`",
            ),
            ({"memory_limit": -5}, "memory_limit must be a size such as 4GB, or 0"),
            ({"memory_limit": "-1GB"}, "memory_limit must be a size"),
            (
                {"performance_report": "nosuchfs://bucket/report.html"},
                r"performance_report 'nosuchfs://bucket/report.html' cannot be written"
                r" \(Protocol not known: nosuchfs\)",
            ),
        ],
    )
    def test_wrong_values_say_what_is_expected(self, options, words):
        with pytest.raises(DaskSetupError, match=words):
            DaskRunner(**options)

    def test_a_report_under_the_home_folder_is_checked_there(
        self, tmp_path, monkeypatch
    ):
        """Dask (fsspec) writes ``~/...`` in the home folder, not in ``./~``."""
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.chdir(tmp_path)
        DaskClientConfig.from_options({"performance_report": "~/reports/dask.html"})
        assert (tmp_path / "home" / "reports").is_dir()
        assert not (tmp_path / "~").exists()


class TestUpFrontChecks:
    def test_a_node_that_cannot_be_sent_is_named(self, caplog):
        """In one paragraph: not after distributed's ERROR and traceback for it."""
        lock = threading.Lock()
        pipeline = Pipeline(
            [Node(lambda seed: (lock, seed)[1], "seed", "out", name="holds_a_lock")]
        )
        with pytest.raises(DaskSetupError, match="node 'holds_a_lock'.*lock"):
            DaskRunner(processes=False).run(pipeline, _catalog(seed=1))
        assert "Failed to serialize" not in caplog.text

    def test_a_pipeline_input_that_cannot_be_sent_is_named(self):
        pipeline = Pipeline([Node(cases.identity, "lock", "out", name="copy")])
        catalog = _catalog()
        catalog["lock"] = MemoryDataset(threading.Lock(), copy_mode="assign")
        with pytest.raises(DaskSetupError, match="pipeline input 'lock'.*lock"):
            DaskRunner(processes=False).run(pipeline, catalog)

    def test_a_single_process_dataset_is_refused(self):
        class SingleProcessDataset(AbstractDataset):
            _SINGLE_PROCESS = True

            def _load(self):
                return 1

            def _save(self, data):
                pass

            def _describe(self):
                return {}

        pipeline = Pipeline([Node(cases.identity, "source", "out", name="copy")])
        catalog = DataCatalog(datasets={"source": SingleProcessDataset()})
        with pytest.raises(DaskSetupError, match="dataset 'source'"):
            DaskRunner(processes=False).run(pipeline, catalog)

    def test_workers_are_asked_to_import_only_what_travels_by_reference(
        self, process_cluster, monkeypatch
    ):
        """distributed closes a worker that cannot unpickle a task, so the run asks
        the workers first: a module only this process has is named. A function of
        no imported module travels by value (cloudpickle), so it runs."""
        module = type(sys)("only_on_the_driver")
        exec("def double(x):\n    return 2 * x\n", vars(module))
        monkeypatch.setitem(sys.modules, module.__name__, module)
        runner = DaskRunner(
            address=process_cluster.scheduler_address,
            upload_project=False,
            no_worker_timeout=30,  # bounds a failure: workers given the task go
        )
        pipeline = Pipeline([Node(module.double, "x", "y", name="double")])
        with pytest.raises(
            DaskSetupError, match=r"need: only_on_the_driver \(ModuleNotFoundError"
        ):
            runner.run(pipeline, _catalog(x=2))
        monkeypatch.delitem(sys.modules, module.__name__)
        assert runner.run(pipeline, _catalog(x=2))["y"].load() == 4
        assert len(process_cluster.scheduler_info["workers"]) == 2


def _chain(length: int) -> Pipeline:
    return Pipeline(
        [
            Node(cases.add_one, f"d{i}", f"d{i + 1}", name=f"step_{i}")
            for i in range(length)
        ]
    )


class TestCatalogBeforeTheRun:
    """DaskRunner adds the pipeline's in-memory datasets to the catalog itself
    (add_memory_datasets) before Kedro's warm-up, which then finds them there."""

    def test_the_catalog_gets_what_kedros_warm_up_would_make(self):
        pipeline = Pipeline(
            [_chain(4), Node(cases.double, "d2", "doubled_assigned", name="twice")]
        )
        patterns = {"{name}_assigned": {"type": "MemoryDataset", "copy_mode": "assign"}}
        ours = DataCatalog.from_config(patterns)
        kedros = DataCatalog.from_config(patterns)
        ours["d0"] = kedros["d0"] = MemoryDataset(1)
        add_memory_datasets(pipeline, ours)
        for catalog in (ours, kedros):
            for name in pipeline.datasets():  # Kedro's warm-up in AbstractRunner.run
                catalog.get(name, fallback_to_runtime_pattern=True)
        assert sorted(ours.keys()) == sorted(kedros.keys())
        for name in pipeline.datasets():
            assert repr(ours.get(name)) == repr(kedros.get(name)), name
        assert ours.get("doubled_assigned")._copy_mode == "assign"
        datasets = [ours.get(name) for name in pipeline.datasets()]
        assert len({id(dataset) for dataset in datasets}) == len(datasets)

    def test_kedro_makes_only_the_first_in_memory_dataset(self, monkeypatch):
        """Making each from the pattern's config costs 0.4 ms (Kedro imports its
        class anew every time): the rest are copies."""
        made = []
        from_config = AbstractDataset.from_config.__func__

        def counted(cls, name, *args, **kwargs):
            made.append(name)
            return from_config(cls, name, *args, **kwargs)

        monkeypatch.setattr(AbstractDataset, "from_config", classmethod(counted))
        catalog = _catalog(d0=1)
        add_memory_datasets(_chain(50), catalog)
        assert len(made) == 1
        assert all(isinstance(catalog.get(f"d{i}"), MemoryDataset) for i in range(51))

    def test_a_missing_pipeline_input_still_fails_the_run(self):
        with pytest.raises(ValueError, match=r"Pipeline input\(s\) \{'d0'\} not found"):
            DaskRunner(processes=False).run(_chain(3), DataCatalog())


class TestLifecycle:
    def test_starts_and_closes_its_own_cluster_every_run(self):
        before = _worker_processes()
        runner = DaskRunner(
            n_workers=1, threads_per_worker=1, dashboard_address=f"{LOOPBACK}:0"
        )
        for seed in (1, 2):  # the same runner object runs twice
            result = runner.run(_doubled(), _catalog(seed=seed))
            assert result["doubled"].load() == 2 * seed
        psutil.wait_procs(list(_worker_processes() - before), timeout=10)
        assert _worker_processes() <= before, "worker processes outlived the run"

    def test_its_worker_processes_fork_from_the_forkserver(self):
        """Forked, they import Dask, numpy and pandas once, not once each."""
        pipeline = Pipeline([Node(_parent_command, "seed", "parent")])
        runner = DaskRunner(
            n_workers=1, threads_per_worker=1, dashboard_address=f"{LOOPBACK}:0"
        )
        parent = runner.run(pipeline, _catalog(seed=0))["parent"].load()
        assert "forkserver" in parent

    def test_its_workers_start_with_the_pipelines_imported_and_ctrl_c_blocked(self):
        """The forkserver, started when the runner is created, imports the
        project's pipelines once for every worker, and is born with SIGINT
        blocked, which the workers it forks inherit (see runner/interrupts.py)."""
        pipeline = Pipeline([Node(_how_the_worker_started, "seed", "how")])
        runner = DaskRunner(
            n_workers=1, threads_per_worker=1, dashboard_address=f"{LOOPBACK}:0"
        )
        how = runner.run(pipeline, _catalog(seed=0))["how"].load()
        assert how == {"pipelines imported": True, "Ctrl-C blocked": True}

    def test_workers_see_this_processs_environment_in_every_run(self, monkeypatch):
        """The forkserver keeps the environment it started with: the runner must
        hand each run's workers the environment as it is at that run."""
        pipeline = Pipeline([Node(_environment_variable, "name", "value")])
        runner = DaskRunner(
            n_workers=1, threads_per_worker=1, dashboard_address=f"{LOOPBACK}:0"
        )
        for value in ("first", "second"):
            monkeypatch.setenv("DASK_RUNNER_TEST_VALUE", value)
            result = runner.run(pipeline, _catalog(name="DASK_RUNNER_TEST_VALUE"))
            assert result["value"].load() == value

    def test_worker_threads_leave_this_process_garbage_collected(self):
        # Worker processes skip Python's final collection when they close; workers
        # that are threads of this process must not switch it off here.
        frozen = gc.get_freeze_count()
        runner = DaskRunner(
            n_workers=1, processes=False, dashboard_address=f"{LOOPBACK}:0"
        )
        assert runner.run(_doubled(), _catalog(seed=5))["doubled"].load() == 10
        assert gc.get_freeze_count() == frozen

    def test_uses_and_keeps_the_client_already_active_here(self, thread_cluster):
        with Client(thread_cluster) as client:  # becomes this process's default
            result = DaskRunner().run(_doubled(), _catalog(seed=3))
            assert client.status == "running"
        assert result["doubled"].load() == 6

    def test_a_cluster_here_that_cannot_start_workers_fails_the_run_and_stays(self):
        """As dask-jobqueue's jobs when sbatch refuses them: the workers stay created
        and the SpecCluster does not retry."""

        class RefusedJob(ProcessInterface):
            def __init__(self, scheduler: str, name: str) -> None:
                super().__init__()

            async def start(self) -> None:
                raise RuntimeError("sbatch: error: invalid partition specified")

        scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
        with (
            SpecCluster(scheduler=scheduler, worker={"cls": RefusedJob}) as cluster,
            Client(cluster) as client,  # becomes this process's default
        ):
            cluster.scale(1)
            with pytest.raises(DaskRunError) as refused:
                DaskRunner().run(_doubled(), _catalog(seed=3))
            assert client.status == "running"
        message = str(refused.value)
        assert "SpecCluster could not start any of the 1 Dask workers" in message
        assert "closed" not in message
        assert "Check the options the cluster was made with" in message

    def test_a_cluster_it_would_start_with_no_workers_is_refused_at_once(self):
        """A SpecCluster adds workers only when scaled: without `adapt` the run
        would wait no_worker_timeout for nothing (dask-jobqueue without n_workers)."""
        runner = DaskRunner(
            n_workers=0,
            processes=False,
            dashboard_address=f"{LOOPBACK}:0",
            no_worker_timeout=5,
        )
        with pytest.raises(DaskSetupError, match="started with no workers"):
            runner.run(_doubled(), _catalog(seed=1))

    def test_an_adapt_key_distributed_would_refuse_mid_run_is_refused_at_once(self):
        runner = DaskRunner(
            processes=False,
            dashboard_address=f"{LOOPBACK}:0",
            adapt={"minimum": 1, "maxmum": 2},
        )
        with pytest.raises(DaskSetupError, match=r"maxmum \(did you mean maximum\?"):
            runner.run(_doubled(), _catalog(seed=1))

    def test_a_dashboard_port_another_run_has_is_replaced_without_a_warning(self):
        """Dask takes a free port and warns; the runner logs the link it got."""
        with socket.socket() as taken:
            with contextlib.suppress(OSError):  # taken already: as good
                taken.bind((LOOPBACK, 8787))
                taken.listen()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runner = DaskRunner(n_workers=1, processes=False)
                runner.run(_doubled(), _catalog(seed=1))
        assert not [w for w in caught if "already in use" in str(w.message)]

    def test_tls_files_are_refused_for_a_cluster_it_starts(self, tmp_path: Path):
        """Its client would refuse the LocalCluster's tcp:// address."""
        (tmp_path / "ca.pem").write_text("")
        runner = DaskRunner(
            n_workers=1,  # a cluster to start, whatever client this process has
            processes=False,
            security={"tls_ca_file": str(tmp_path / "ca.pem")},
        )
        with pytest.raises(DaskSetupError, match="starts a LocalCluster, whose"):
            runner.run(_doubled(), _catalog(seed=1))

    def test_a_cluster_class_that_makes_no_cluster_is_refused(self):
        runner = DaskRunner(cluster_class="os.getcwd")
        with pytest.raises(DaskSetupError, match="'os.getcwd' returned a str, not"):
            runner.run(_doubled(), _catalog(seed=1))

    def test_a_scheduler_address_from_dask_config_left_unused_is_said(self, caplog):
        """``n_workers`` starts a cluster even with $DASK_SCHEDULER_ADDRESS set."""
        caplog.set_level(logging.WARNING)
        with dask.config.set({"scheduler-address": "tcp://127.0.0.1:1"}):
            runner = DaskRunner(n_workers=1, processes=False, dashboard_address=None)
            assert runner.run(_doubled(), _catalog(seed=1))["doubled"].load() == 2
        assert "the scheduler at tcp://127.0.0.1:1 (Dask's" in caplog.text

    @pytest.mark.parametrize("processes", [True, False])
    def test_a_memory_limit_a_starting_worker_fills_is_refused_at_once(self, processes):
        """Dask would pause the worker before any node, and restart it for ever."""
        runner = DaskRunner(
            n_workers=1,
            processes=processes,
            memory_limit="50MB",
            dashboard_address=f"{LOOPBACK}:0",
        )
        with pytest.raises(DaskSetupError, match="holds .* as it starts"):
            runner.run(_doubled(), _catalog(seed=1))

    def test_workers_all_paused_running_nothing_stop_the_run(self):
        """As when every worker is over its memory limit with no node running (paused
        by hand here, with no limit that would resume it)."""
        with (
            LocalCluster(
                n_workers=1,
                processes=False,
                memory_limit=0,
                dashboard_address=f"{LOOPBACK}:0",
            ) as cluster,
            Client(cluster) as client,  # becomes this process's default
        ):
            client.run(
                lambda dask_worker: setattr(dask_worker, "status", Status.paused)
            )
            runner = DaskRunner(no_worker_timeout=1)
            with pytest.raises(DaskRunError, match="were all paused, running nothing"):
                runner.run(_doubled(), _catalog(seed=1))

    def test_leaves_a_scheduler_it_connected_to_running(self, process_cluster):
        runner = DaskRunner(
            address=process_cluster.scheduler_address, upload_project=False
        )
        runner.run(_doubled(), _catalog(seed=1))
        with Client(process_cluster, set_as_default=False) as client:
            assert len(client.scheduler_info()["workers"]) == 2

    @pytest.mark.parametrize("local_file", [False, True])
    def test_workers_get_a_run_plugin_only_with_something_to_set_up(
        self, process_cluster, tmp_path: Path, local_file: bool
    ):
        """Workers elsewhere check the run's local files (none: nothing to check)
        and fire its hooks (none here)."""
        catalog = _catalog(seed=1)
        if local_file:
            catalog["kept"] = PickleDataset(filepath=str(tmp_path / "kept.pickle"))
        pipeline = Pipeline(
            [Node(_run_plugins_here, "seed", "kept", name="look"), *_doubled().nodes]
        )
        outputs = Pipeline([Node(cases.identity, "kept", "seen", name="copy")])
        # What this test's process set since its first runner (PYTEST_CURRENT_TEST)
        # would go to the workers: this runner starts from this environment.
        environment_at_start.cache_clear()
        runner = DaskRunner(
            address=process_cluster.scheduler_address,
            upload_project=False,
            check_shared_storage=True,
        )
        result = runner.run(pipeline + outputs, catalog)
        assert result["seen"].load() == local_file

    def test_a_lost_node_is_followed_again_once_dask_recomputes_it(self):
        """A node's result lost with its worker before the driver saw it finish:
        Dask computes it again, and the driver waits for that."""

        class NodeFuture:  # only what the bookkeeping reads of a dask Future
            def __init__(self, status: str) -> None:
                self.status, self.followed = status, 0

            def add_done_callback(self, _: object) -> None:
                self.followed += 1

        still_lost, computing, computed = map(
            NodeFuture, ("lost", "pending", "finished")
        )
        submitted = SubmittedGraph(None, "", {}, {})
        submitted._lost = [still_lost, computing, computed]
        assert submitted.completed(timeout=0) == [computed]
        assert submitted._lost == [still_lost]
        assert (computing.followed, computed.followed) == (1, 0)


class TestRunOptions:
    def test_retries_rerun_a_flaky_node(self, process_cluster, tmp_path: Path):
        pipeline = Pipeline([Node(cases.fail_once, "marker", "out", name="flaky")])
        runner = DaskRunner(
            address=process_cluster.scheduler_address, upload_project=False, retries=1
        )
        result = runner.run(pipeline, _catalog(marker=str(tmp_path / "failed-once")))
        assert result["out"].load() == "second try"

    @pytest.mark.parametrize(
        "versioned", [PickleDataset, cases.VersionedWithoutFileSystem]
    )
    def test_a_retried_node_saves_its_versioned_output_anew(
        self, process_cluster, tmp_path, versioned
    ):
        # The first try saves the model, then fails to save `flaky`.
        saved_at = "2026-12-06T00.00.00.000Z"  # as a session's catalog sets it
        pipeline = Pipeline([Node(_two_parts, "seed", ["model", "flaky"], name="fit")])
        catalog = DataCatalog(
            {
                "seed": MemoryDataset(1),
                "model": versioned(
                    filepath=str(tmp_path / "model.pkl"),
                    version=Version(None, saved_at),
                ),
                "flaky": cases.SaveFailsOnce(str(tmp_path / "failed-once")),
            }
        )
        runner = DaskRunner(
            address=process_cluster.scheduler_address, upload_project=False, retries=1
        )
        runner.run(pipeline, catalog)
        assert [path.name for path in (tmp_path / "model.pkl").iterdir()] == [saved_at]

    def test_tagged_nodes_run_only_on_workers_with_their_resources(self, hook_log):
        # Worker processes (the hook_log fixture puts the tests on their path):
        # a node that uses distributed gets a worker client, which must not
        # become this process's default client.
        tagged = [f"on_gpu_{i}" for i in range(6)]
        pipeline = Pipeline(
            [
                Node(_worker_name, "seed", name, name=name, tags=["gpu"])
                for name in tagged
            ]
            + [Node(_worker_name, "seed", f"anywhere_{i}") for i in range(6)]
        )
        workers = {
            "plain": {"cls": Nanny, "options": {"nthreads": 1, "host": LOOPBACK}},
            "gpu": {
                "cls": Nanny,
                "options": {"nthreads": 1, "resources": {"GPU": 1}, "host": LOOPBACK},
            },
        }
        options = {"host": LOOPBACK, "dashboard_address": f"{LOOPBACK}:0"}
        scheduler = {"cls": Scheduler, "options": options}
        with SpecCluster(workers=workers, scheduler=scheduler) as cluster:
            runner = DaskRunner(
                address=cluster.scheduler_address,
                upload_project=False,
                tag_resources={"gpu": {"GPU": 1}},
            )
            result = runner.run(pipeline, _catalog(seed=4))
        assert {result[name].load() for name in tagged} == {"gpu"}

    @pytest.mark.parametrize(
        "has, asks", [(None, "GPU=1"), ({"GPU": 1}, "GPU=2"), ({"GPU": 2}, "GPU=2,X=1")]
    )
    def test_resources_no_worker_has_are_refused_instead_of_waiting(
        self, has, asks, tmp_path: Path
    ):
        """A resource no worker has, or more of it than one has, or two resources
        that no one worker has both of."""
        pipeline = Pipeline(
            [Node(cases.double, "seed", "doubled", name="double", tags=["gpu"])]
        )
        report = tmp_path / "dask.html"
        asked = dict(pair.split("=") for pair in asks.split(","))
        runner = DaskRunner(
            n_workers=1,
            processes=False,
            resources=has,
            dashboard_address=None,
            tag_resources={"gpu": {name: float(n) for name, n in asked.items()}},
            performance_report=str(report),
        )
        with pytest.raises(DaskSetupError, match=f"asks for {asks} on one worker"):
            runner.run(pipeline, _catalog(seed=4))
        assert not report.exists()  # a run refused before it started has no report

    @pytest.mark.parametrize(
        "setting",
        [{"tag_timeouts": {"slwo": 5}}, {"tag_resources": {"slwo": {"X": 1}}}],
    )
    def test_a_tag_no_node_has_is_named_before_anything_runs(
        self, setting, thread_cluster
    ):
        pipeline = Pipeline(
            [Node(cases.double, "seed", "doubled", name="double", tags=["slow"])]
        )
        runner = DaskRunner(address=thread_cluster.scheduler_address, **setting)
        with pytest.raises(DaskSetupError, match=r"\.slwo: no node .*mean slow\?"):
            runner.run(pipeline, _catalog(seed=4))

    def test_a_time_limit_counts_from_the_limited_nodes_own_start(self, thread_cluster):
        # "output-a" is also the name Dask's task taking `a` out of split's tuple
        # ends with: that task starts 1.5 s before the node does.
        pipeline = Pipeline(
            [
                Node(_two_parts, "seed", ["a", "b"], name="split"),
                Node(_slowly, "b", "c", name="slow"),
                Node(cases.add, ["a", "c"], "d", name="output-a", tags=["quick"]),
            ]
        )
        runner = DaskRunner(
            address=thread_cluster.scheduler_address, tag_timeouts={"quick": 1.0}
        )
        assert runner.run(pipeline, _catalog(seed=1))["d"].load() == 3

    @pytest.mark.parametrize("where", ["a folder", "under a file"])
    def test_a_performance_report_path_it_cannot_write_is_refused_at_once(
        self, where: str, tmp_path: Path
    ):
        """Dask writes it as the run ends: the nodes would have run, then failed."""
        (tmp_path / "file").touch()
        path = tmp_path if where == "a folder" else tmp_path / "file" / "dask.html"
        with pytest.raises(DaskSetupError, match="performance_report .* cannot be wr"):
            DaskRunner(performance_report=str(path))

    def test_performance_report_is_written(self, thread_cluster, tmp_path: Path):
        report = tmp_path / "reports" / "dask.html"
        runner = DaskRunner(
            address=thread_cluster.scheduler_address, performance_report=str(report)
        )
        runner.run(_doubled(), _catalog(seed=1))
        assert report.stat().st_size > 0
        assert "<html" in report.read_text(encoding="utf-8").lower()


class TestSafety:
    @pytest.mark.parametrize(
        "address, exposed",
        [
            ("tcp://127.0.0.1:8786", False),
            ("tcp://localhost:8786", False),
            ("tcp://[::1]:8786", False),
            ("tls://10.0.0.5:8786", False),
            ("inproc://10.0.0.5/1/2", False),
            ("tcp://10.0.0.5:8786", True),
            ("tcp://scheduler.example.com:8786", True),
            ("ws://10.0.0.5:8786", True),
        ],
    )
    def test_what_travels_in_the_clear(self, address, exposed):
        assert in_the_clear(address) is exposed

    @pytest.mark.parametrize("dashboard", [{}, {"dashboard_address": None}])
    def test_a_cluster_in_threads_listens_on_loopback_only(self, dashboard, caplog):
        """Dask's scheduler and workers serve /health, without a dashboard too, and
        in-process workers on every interface unless given an address."""
        caplog.set_level("INFO")
        runner = DaskRunner(n_workers=2, processes=False, **dashboard)
        pipeline = Pipeline([Node(_listening, "seed", "listening", name="listen")])
        before = _listening(None)  # other tests' clusters
        during = runner.run(pipeline, _catalog(seed=1))["listening"].load()
        assert {host for host, _ in during - before} == {LOOPBACK}
        no_dashboard = "Dask dashboard: none (dask_client.dashboard_address is null)"
        assert (no_dashboard in caplog.text) is bool(dashboard)
        if not dashboard:  # the link logged is where it listens
            link = re.search(r"Dask dashboard: http://(.+):(\d+)/status", caplog.text)
            assert link and (link[1], int(link[2])) in during - before, caplog.text

    def test_a_failing_node_in_threads_logs_no_dask_failure(self, caplog):
        """Workers in this process log to its loggers: Dask's "Compute Failed" and the
        tasks cancelled after it would come before the node's own error."""
        pipeline = Pipeline(
            [
                Node(cases.fail, "seed", "broken", name="failing"),
                Node(_slowly, "seed", "later", name="slow"),
            ]
        )
        runner = DaskRunner(n_workers=1, processes=False, dashboard_address=None)
        with pytest.raises(ValueError, match="boom while handling 1"):
            runner.run(pipeline, _catalog(seed=1))
        assert "Compute Failed" not in caplog.text
        assert "Async instruction" not in caplog.text

    def test_ctrl_c_inside_is_raised_on_the_way_out(self):
        reached_the_end = False
        with pytest.raises(KeyboardInterrupt), CtrlCHeldBack():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # a press here must not interrupt
            reached_the_end = True
        assert reached_the_end
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def test_without_signal_masks_nothing_is_held_back(self, monkeypatch):
        """Windows has no ``pthread_sigmask``, nor a resource tracker to start:
        a press there interrupts at once, as without the runner."""
        monkeypatch.delattr(signal, "pthread_sigmask")
        monkeypatch.setattr(
            "multiprocessing.resource_tracker.ensure_running",
            lambda: pytest.fail("started the resource tracker"),
        )
        handler = signal.getsignal(signal.SIGINT)
        with CtrlCHeldBack():
            assert signal.getsignal(signal.SIGINT) is handler

    def test_a_second_ctrl_c_is_raised_at_once(self):
        with pytest.raises(KeyboardInterrupt), CtrlCHeldBack():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            pytest.fail("the second press did not interrupt")

    def test_a_press_as_a_run_closes_is_held_not_swallowed(self):
        """Python ignores a press raised in a weakref callback or ``__del__`` (as an
        import cleans up, while things close), and the run would end as a success."""
        config = DaskClientConfig.from_options(
            {"n_workers": 1, "processes": False, "dashboard_address": None}
        )
        held = CtrlCHeldBack()
        with pytest.raises(KeyboardInterrupt):
            with dask_client(config, held), _pressed_in_del_on_exit():
                with held.on_the_way_out():
                    pass
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def test_a_press_python_swallowed_in_an_import_still_stops_the_run(self):
        """A press just after importlib's lock clean-up took the import lock prints
        "Exception ignored" and leaves it held, as here: a LocalCluster's start would
        fail after 10 s with a bare AssertionError."""
        _imp.acquire_lock()
        try:
            with pytest.raises(KeyboardInterrupt):
                with dask_client(DaskClientConfig.from_options({})):
                    pytest.fail("a cluster started")
            assert not _imp.lock_held()
        finally:
            while _imp.lock_held():
                _imp.release_lock()

    def test_ctrl_c_before_a_dask_call_starts_logs_no_traceback(self, caplog):
        """distributed's sync() logs a NameError traceback when Ctrl-C comes before
        its coroutine has started (its cancel callback reads an unset variable):
        here the loop is busy, so the press always comes first."""
        loop_runner = distributed.utils.LoopRunner(asynchronous=False)
        loop_runner.start()
        try:
            loop_runner.loop.add_callback(time.sleep, 0.5)
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
            with pytest.raises(KeyboardInterrupt):
                distributed.utils.sync(loop_runner.loop, distributed.utils.All, [])
            time.sleep(0.8)  # the loop runs the cancel callback
        finally:
            loop_runner.stop()
        assert not [r for r in caplog.records if r.exc_info], caplog.text

    def test_threads_started_inside_block_ctrl_c(self):
        masks = []
        with CtrlCHeldBack():
            thread = threading.Thread(
                target=lambda: masks.append(
                    signal.pthread_sigmask(signal.SIG_BLOCK, [])
                )
            )
            thread.start()
            thread.join()
        assert signal.SIGINT in masks[0]
        assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])

    def test_importing_a_cluster_class_keeps_the_ctrl_c_handler(self, monkeypatch):
        """dask_jobqueue's import replaces SIGINT's handler with sys.exit()."""
        module = type(sys)("replaces_sigint")
        module.Cluster = object

        def importing(name: str):
            signal.signal(signal.SIGINT, lambda *_: sys.exit())
            if name != module.__name__:  # pydoc.locate tries the whole path too
                raise ImportError(f"No module named {name!r}", name=name)
            return module

        monkeypatch.setattr("importlib.import_module", importing)
        monkeypatch.setitem(sys.modules, "replaces_sigint", module)
        before = signal.getsignal(signal.SIGINT)
        config = DaskClientConfig.from_options(
            {"cluster_class": "replaces_sigint.Cluster"}
        )
        assert cluster_factory(config.cluster_class) is object
        assert signal.getsignal(signal.SIGINT) is before
