"""Shared helpers for the template's tests: rendering, bounded subprocesses, Dask
clusters of the `dask` CLI, and the CLI's error paragraph (what needs no pytest
is in shared.py)."""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from distributed import Client
from distributed.security import Security

from .shared import (
    ROOT,
    free_port,
    kill_group,
    render_as_is,
    stop_groups,
    tail,
    wait_for,
)

PACKAGE = "iris_dask"
DASK_RUNNER = f"{PACKAGE}.runner.DaskRunner"
ENV = {
    **os.environ,
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "COLUMNS": "200",  # rich wraps log lines at the terminal width
}
#: As on a machine without the project: no PYTHONPATH that could hold it.
ENV_WITHOUT_PROJECT = {key: value for key, value in ENV.items() if key != "PYTHONPATH"}
BIN = Path(sys.executable).parent

# A suite started with Ctrl-C ignored (a background job of a script, nohup) would
# pass that on to every process it starts: the Ctrl-C tests need Ctrl-C as a
# terminal delivers it. A handler, unlike an ignored signal, is not inherited.
signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ctrl_c_matrix: the Ctrl-C presses only `nox -s interrupts` runs"
    )


@dataclass
class Finished:
    returncode: int
    output: str


def run_bounded(
    args: Sequence[str],
    cwd: Path,
    timeout: float,
    env: dict,
    stderr: int = subprocess.STDOUT,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs a command in its own process group to its end (stderr apart with
    ``stderr=subprocess.PIPE``); on timeout the whole group (Dask workers
    included) is killed and the test fails with the output's end (naming the
    command, or ``what``), so no test leaves processes behind."""
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            output, errors = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            output, errors = process.communicate(timeout=30)
            pytest.fail(
                f"{what or list(args)} did not finish in {timeout} s:\n"
                f"{output[-5000:]}{(errors or '')[-5000:]}"
            )
    return subprocess.CompletedProcess(args, process.returncode, output, errors)


def run_command(
    args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None
) -> Finished:
    """``run_bounded``, stdout and stderr together."""
    env = env or ENV
    if args[1:2] == ["new"]:  # cookiecutter leaves its rendered hooks in TMPDIR
        env = {**env, "TMPDIR": str(cwd)}
    done = run_bounded(args, cwd, timeout, env)
    return Finished(done.returncode, done.stdout)


def kedro(
    *args: str, cwd: Path, timeout: float = 300, env: dict | None = None
) -> Finished:
    return run_command([str(BIN / "kedro"), *args], cwd, timeout, env)


#: The files a run of the example writes, with the settings of ``conf/test``.
EXAMPLE_OUTPUTS = 15


_ORIGINAL_NODES: dict[Path, str] = {}


def example_nodes(project: Path) -> Path:
    """The module of the example's nodes (split_data and the rest)."""
    return project / "src" / PACKAGE / "pipelines" / "iris" / "nodes.py"


def set_code_version(
    project: Path, version: str, waits_for: Path | None = None
) -> None:
    """Makes the example's split_data node log "code version <version>" (runs read it
    with ``ran_code_version``), first waiting for the file ``waits_for``, if given."""
    nodes = example_nodes(project)
    original = _ORIGINAL_NODES.setdefault(nodes, nodes.read_text())
    end = "    return x_train, x_test, y_train, y_test\n"
    assert end in original
    wait = ""
    if waits_for is not None:
        wait = (
            f"    while not __import__('pathlib').Path({str(waits_for)!r}).exists():\n"
            "        __import__('time').sleep(0.05)\n"
        )
    logs = f'    logger.info("code version {version}")\n'
    nodes.write_text(original.replace(end, f"{wait}{logs}{end}"))


def ran_code_version(output: str) -> list[str]:
    return re.findall(r"code version (\w)", output)


def render(output_dir: Path, **extra_context: str) -> Path:
    """Renders the template as `--no-input` does (``render_as_is``), and gives its
    example the small settings of the project's ``conf/test`` in ``conf/base``
    (Kedro replaces a whole parameter block given in another environment, or in
    part with ``--params``, so they go where the tests' ``--params`` and
    ``--env`` leave them alone)."""
    project = render_as_is(output_dir, **extra_context)
    use_small_settings(project)
    return project


def use_small_settings(project: Path) -> None:
    """Puts the example's small settings of ``conf/test`` into ``conf/base``."""
    base = project / "conf/base/parameters.yml"
    small = yaml.safe_load((project / "conf/test/parameters.yml").read_text())
    base.write_text(yaml.safe_dump({**yaml.safe_load(base.read_text()), **small}))


def _generated_conftest():
    """The generated project's tests/conftest.py, free of template variables: its
    reading of a run's outputs is the one both test suites compare."""
    path = ROOT / "{{ cookiecutter.repo_name }}" / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location("generated_conftest", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


#: Every file a run wrote under ``data/`` but the raw data; a pickle by its value.
data_files = _generated_conftest().persisted_outputs


def outputs_under_sequential_runner(folder: Path) -> dict[str, bytes]:
    """Renders the example into ``folder`` and returns the outputs of its run on
    Kedro's SequentialRunner: the reference every DaskRunner run must equal."""
    project = render(folder)
    result = kedro("run", cwd=project)
    assert result.returncode == 0, result.output
    outputs = data_files(project)
    assert len(outputs) == EXAMPLE_OUTPUTS
    return outputs


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project rendered with the defaults, for tests that only read it."""
    return render_as_is(tmp_path_factory.mktemp("rendered"))


@pytest.fixture
def fresh_project(tmp_path: Path) -> Path:
    """A project of its own, for tests that run it."""
    return render(tmp_path)


def copy_template(destination: Path) -> Path:
    """A copy of the template to break on purpose."""
    shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(".git", ".nox"))
    return destination


def error_paragraph(output: str) -> str:
    """The CLI's error: one paragraph starting with "Error: ", ending the output,
    with no traceback anywhere."""
    assert "Traceback" not in output, output
    found = re.search(r"^Error: ", output, flags=re.MULTILINE)
    assert found, output
    message = output[found.start() :].strip()
    assert "\n\n" not in message, message
    return " ".join(message.split())  # undo any line wrapping


def refusal(result: Finished, starting_with: str) -> str:
    """The error paragraph of a run that must have exited with 1, saying
    ``starting_with`` first."""
    assert result.returncode == 1, result.output
    message = error_paragraph(result.output)
    assert message.startswith(starting_with), message
    return message


@dataclass
class CliCluster:
    """A scheduler and workers started with the `dask` CLI, on 127.0.0.1 only."""

    address: str
    #: The folder of each process's log, ``<name>.log`` (workers: worker-<index>).
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    security: Security | None = None

    def client(self) -> Client:
        return Client(
            self.address, security=self.security, timeout=30, set_as_default=False
        )

    def workers(self) -> dict[str, Any]:
        """The scheduler's information on each connected worker, by address."""
        with self.client() as client:
            return client.scheduler_info(n_workers=-1)["workers"]

    def worker_pids(self) -> dict[str, int]:
        """The process id of each worker, by worker address."""
        with self.client() as client:
            return client.run(os.getpid)


def dask_tls_args(tls: Mapping[str, str] | None) -> list[str]:
    """The `dask scheduler` and `dask worker` options for the TLS files ``tls``
    (``ca``, ``cert``, ``key``: see ``make_tls_files``); none without."""
    if not tls:
        return []
    return [
        f"--tls-ca-file={tls['ca']}",
        f"--tls-cert={tls['cert']}",
        f"--tls-key={tls['key']}",
    ]


@contextlib.contextmanager
def cli_cluster(
    logs: Path,
    n_workers: int = 2,
    worker_env: dict | None = None,
    worker_cwd: Path | None = None,
    tls: dict[str, str] | None = None,
    scheduler_env: dict | None = None,
    python: Path | None = None,
    worker_resources: list[str] | None = None,
) -> Iterator[CliCluster]:
    """Starts `dask scheduler` and `n_workers` `dask worker` processes (with
    nannies), waits until all workers are connected, and stops them all on exit.

    ``tls`` holds ``ca``, ``cert`` and ``key`` file paths to start a TLS cluster;
    ``python``, the interpreter of another environment to run them in;
    ``worker_resources``, each worker's `--resources` (and so their number).
    """
    if worker_resources:
        n_workers = len(worker_resources)
    dask = [str(BIN / "dask")]
    if python:
        dask = [str(python), "-m", "dask"]
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tls_args = dask_tls_args(tls)
    security = None
    if tls:
        security = Security(
            tls_ca_file=tls["ca"],
            tls_client_cert=tls["cert"],
            tls_client_key=tls["key"],
            require_encryption=True,
        )
    protocol = "tls" if tls else "tcp"
    cluster = CliCluster(f"{protocol}://127.0.0.1:{port}", logs, security=security)

    def start(args: list[str], name: str, env: dict, cwd: Path | None) -> None:
        log = (logs / f"{name}.log").open("w")
        cluster.processes.append(
            subprocess.Popen(
                [*dask, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd or logs,
                start_new_session=True,
            )
        )

    try:
        start(
            [
                "scheduler",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--protocol={protocol}",
                "--dashboard-address=127.0.0.1:0",
                *tls_args,
            ],
            "scheduler",
            scheduler_env or ENV,
            None,
        )
        for index in range(n_workers):
            start(
                [
                    "worker",
                    cluster.address,
                    "--host=127.0.0.1",
                    "--nthreads=1",
                    "--no-dashboard",
                    f"--name=worker-{index}",
                    *tls_args,
                    *(
                        [f"--resources={worker_resources[index]}"]
                        if worker_resources
                        else []
                    ),
                ],
                f"worker-{index}",
                worker_env or ENV,
                worker_cwd,
            )

        def connected() -> bool:
            with contextlib.suppress(OSError, TimeoutError):
                with cluster.client() as client:
                    if n_workers:  # else the scheduler answering is enough
                        client.wait_for_workers(n_workers, timeout=5)
                return True
            return False

        wait_for(
            connected,
            60,
            f"{n_workers} workers at {cluster.address}",
            0.2,
            lambda: tail(logs / "scheduler.log"),
        )
        yield cluster
    finally:
        # SIGTERM (Dask's clean shutdown), SIGKILL what is left after 10 s.
        stop_groups(cluster.processes, 10)


def make_tls_files(
    folder: Path, addresses: Sequence[str] = ("127.0.0.1",)
) -> dict[str, str]:
    """A CA, and a certificate and key signed by it for ``addresses`` (IPs) and
    localhost: what `cli_cluster(tls=...)` and `dask_client.security` take; one
    certificate for every process, as a test needs no more."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kedro-dask test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])])
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in addresses),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = {
        "ca": folder / "ca.pem",
        "cert": folder / "cert.pem",
        "key": folder / "key.pem",
    }
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files["key"].chmod(0o600)
    return {name: str(path) for name, path in files.items()}
