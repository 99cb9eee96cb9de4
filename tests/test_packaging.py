"""The starter the way Kedro users get it: installed with pip, used by its alias
(`kedro new --starter=dask`), and the generated project shipped as the wheel
`kedro package` builds.

Everything runs in one fresh virtual environment per module (pip's cache keeps
it quick) that has this repository installed, not the test runner's environment.
A test that installs the project's wheel does so in an environment of its own
layered over that one (see ``layered_venv``), so no test sees another's install.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import sysconfig
import tarfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import kedro
import pytest
from packaging.requirements import Requirement

from .conftest import (
    ENV_WITHOUT_PROJECT,
    EXAMPLE_OUTPUTS,
    PACKAGE,
    ROOT,
    CliCluster,
    cli_cluster,
    data_files,
    ran_code_version,
    refusal,
    run_command,
    set_code_version,
    use_small_settings,
)

NAME = "Iris Dask"
RUN_ON_DASK = f"--runner={PACKAGE}.runner.DaskRunner"
NO_PROMPTS = ("--name", NAME, "--telemetry=no")


def pip_install(python: Path, *args: str, cwd: Path, compile: bool = False) -> None:
    """pip install into ``python``'s environment, quietly, from pip's cache where
    it can (by default no byte-compiling: only what a run imports gets compiled)."""
    result = run_command(
        [str(python), "-m", "pip", "install", "--quiet"]
        + ([] if compile else ["--no-compile"])
        + ["--disable-pip-version-check", *args],
        cwd,
        timeout=600,
    )
    assert result.returncode == 0, result.output


def venv_python(folder: Path) -> Path:
    return folder / "bin" / "python"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with this repository pip-installed, plus what a
    generated project needs (its requirements.txt, with this Kedro)."""
    folder = tmp_path_factory.mktemp("venv") / "venv"
    made = run_command([sys.executable, "-m", "venv", str(folder)], ROOT)
    assert made.returncode == 0, made.output
    requirements = (
        ROOT / "{{ cookiecutter.repo_name }}" / "requirements.txt"
    ).read_text()
    requirements = requirements.replace(
        "{{ cookiecutter.kedro_version }}", kedro.__version__
    )
    python = venv_python(folder)
    pip_install(
        python, f"kedro=={kedro.__version__}", *requirements.split(), cwd=folder
    )
    # As a user's `pip install` does: compiled, the template's modules included.
    pip_install(python, "--no-deps", str(ROOT), cwd=folder, compile=True)
    return folder


def layered_venv(base: Path, folder: Path) -> Path:
    """A virtual environment of its own that also sees ``base``'s packages (a
    .pth file), so installing one more package costs seconds and leaves ``base``
    as it was. Returns its interpreter; its pip is ``base``'s."""
    made = run_command(
        [sys.executable, "-m", "venv", "--without-pip", str(folder)], ROOT
    )
    assert made.returncode == 0, made.output
    paths = {"base": str(base), "platbase": str(base)}
    below = sysconfig.get_path("purelib", vars=paths)
    mine = sysconfig.get_path(
        "purelib", vars={"base": str(folder), "platbase": str(folder)}
    )
    Path(mine, "base-venv.pth").write_text(below + "\n")
    return venv_python(folder)


def cluster_without_project(
    venv: Path, tmp_path: Path, **options: Any
) -> AbstractContextManager[CliCluster]:
    """``cli_cluster`` in a layered environment of ``venv`` (so pip may install
    there), its workers in ``tmp_path / "elsewhere"`` without the project."""
    python = layered_venv(venv, tmp_path / "cluster-venv")
    (tmp_path / "elsewhere").mkdir()
    return cli_cluster(
        tmp_path / "logs",
        worker_env=ENV_WITHOUT_PROJECT,
        worker_cwd=tmp_path / "elsewhere",
        python=python,
        **options,
    )


def kedro_in(venv: Path, *args: str, cwd: Path, timeout: float = 300):
    return run_command([str(venv / "bin" / "kedro"), *args], cwd, timeout)


def tree(project: Path) -> dict[str, bytes]:
    return {
        path.relative_to(project).as_posix(): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def from_alias(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project `kedro new --starter=dask` generates, untouched."""
    here = tmp_path_factory.mktemp("alias")
    result = kedro_in(venv, "new", "--starter=dask", *NO_PROMPTS, cwd=here)
    assert result.returncode == 0, result.output
    return here / "iris-dask"


@pytest.fixture(scope="module")
def packaged(
    venv: Path, from_alias: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the alias's project with the example's small settings, after
    `kedro package`: its ``dist/`` holds the wheel and the conf tarball."""
    project = tmp_path_factory.mktemp("packaged") / "iris-dask"
    shutil.copytree(from_alias, project)
    use_small_settings(project)
    result = kedro_in(venv, "package", cwd=project)
    assert result.returncode == 0, result.output
    return project


def wheel_of(project: Path, distribution: str = PACKAGE) -> Path:
    (wheel,) = (project / "dist").glob(f"{distribution}-*.whl")
    return wheel


def wheels_of_versions(
    venv: Path, project: Path, versions: str, distribution: str = PACKAGE
) -> dict[str, Path]:
    """`kedro package` of ``project`` with each code version (``set_code_version``),
    each wheel kept in ``wheels/<version>/``."""
    wheels = {}
    for version in versions:
        set_code_version(project, version)
        built = kedro_in(venv, "package", cwd=project)
        assert built.returncode == 0, built.output
        built_wheel = wheel_of(project, distribution)
        wheels[version] = project / "wheels" / version / built_wheel.name
        wheels[version].parent.mkdir(parents=True)
        shutil.copy(built_wheel, wheels[version])
    return wheels


# --- 1. the alias ----------------------------------------------------------------


def test_kedro_starter_list_shows_the_dask_alias(venv: Path, tmp_path: Path):
    result = kedro_in(venv, "starter", "list", cwd=tmp_path)

    assert result.returncode == 0, result.output
    assert "Starters from kedro_dask_starter" in result.output
    assert "\ndask:\n" in result.output
    template = venv.glob("lib/python*/site-packages/kedro_dask_starter/template")
    assert f"template_path: {next(template)}" in result.output  # a local folder


def test_the_package_requires_the_supported_kedro_versions(venv: Path):
    """hatch_build.py gives the package cookiecutter.json's Kedro versions."""
    versions = json.loads((ROOT / "cookiecutter.json").read_text())["_kedro_versions"]
    requires = (
        "from importlib.metadata import requires as r; print(r('kedro-dask-starter'))"
    )
    shown = run_command([str(venv_python(venv)), "-c", requires], venv)
    assert shown.returncode == 0, shown.output
    assert [Requirement(r) for r in ast.literal_eval(shown.output)] == [
        Requirement(f"kedro{versions}")
    ]


def test_the_alias_renders_what_the_repository_path_renders(
    venv: Path, from_alias: Path, tmp_path: Path
):
    result = kedro_in(venv, "new", f"--starter={ROOT}", *NO_PROMPTS, cwd=tmp_path)
    assert result.returncode == 0, result.output

    from_path = tree(tmp_path / "iris-dask")
    assert len(from_path) > 50
    assert tree(from_alias) == from_path  # same files, same bytes


def test_the_project_from_the_alias_runs_on_dask(
    venv: Path, from_alias: Path, tmp_path: Path
):
    project = tmp_path / "iris-dask"
    shutil.copytree(from_alias, project)
    use_small_settings(project)

    result = kedro_in(venv, "run", RUN_ON_DASK, cwd=project)

    assert result.returncode == 0, result.output
    assert "Completed 13 out of 13 nodes" in result.output
    assert len(data_files(project)) == EXAMPLE_OUTPUTS


# --- 2. kedro package --------------------------------------------------------------


def test_the_packaged_project_runs_from_its_wheel_and_conf_tarball(
    venv: Path, packaged: Path, tmp_path: Path
):
    """Deployed as `kedro package` intends: the wheel pip-installed, the conf
    tarball unpacked in a folder of its own (with the data), no source tree."""
    assert (packaged / "dist" / f"conf-{PACKAGE}.tar.gz").is_file()
    python = layered_venv(venv, tmp_path / "venv")
    pip_install(python, str(wheel_of(packaged)), cwd=tmp_path)
    deployed = tmp_path / "deployed"
    with tarfile.open(packaged / "dist" / f"conf-{PACKAGE}.tar.gz") as conf:
        conf.extractall(deployed, filter="data")
    shutil.copytree(packaged / "data", deployed / "data")
    assert not (deployed / "conf" / "local" / "credentials.yml").exists()

    where = run_command(
        [str(python), "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"], deployed
    )
    result = run_command([str(python), "-m", PACKAGE, RUN_ON_DASK], deployed)

    assert where.output.startswith(str(tmp_path / "venv")), where.output
    assert result.returncode == 0, result.output
    assert "Completed 13 out of 13 nodes" in result.output
    assert len(data_files(deployed)) == EXAMPLE_OUTPUTS


# --- 3. the wheel installed on workers that lack the project ---------------------


def test_install_wheel_puts_the_project_on_workers_that_lack_it(
    venv: Path, packaged: Path, tmp_path: Path
):
    """`dask scheduler` and `dask worker`s in an environment with the project's
    requirements but not the project: without a way to get it the run fails
    saying what to set; with `install_wheel` pip installs it there and the run
    works."""
    project = tmp_path / "iris-dask"
    shutil.copytree(packaged, project)
    wheel = wheel_of(project).relative_to(project)
    with cluster_without_project(venv, tmp_path) as cluster:
        address = f"dask_client.address={cluster.address}"
        refused = kedro_in(
            venv,
            "run",
            RUN_ON_DASK,
            f"--params={address},dask_client.upload_project=false",
            cwd=project,
        )
        result = kedro_in(
            venv,
            "run",
            RUN_ON_DASK,
            f"--params={address},dask_client.install_wheel={wheel}",
            cwd=project,
        )
        with cluster.client() as client:
            installed = client.run(
                lambda: __import__(PACKAGE).__file__, nanny=False
            ).values()

    message = refusal(refused, "Error: The Dask workers tcp://127.0.0.1:")
    assert f"(ModuleNotFoundError: No module named '{PACKAGE}')" in message
    assert "install_wheel: dist/" in message
    assert result.returncode == 0, result.output
    assert f"Installing {wheel.name} on the Dask cluster" in result.output
    assert "Uploading" not in result.output
    assert "Completed 13 out of 13 nodes" in result.output
    assert len(data_files(project)) == EXAMPLE_OUTPUTS
    assert all(path.startswith(str(tmp_path / "cluster-venv")) for path in installed)


#: A lambda, so Dask sends it by value to workers that cannot import the tests.
NODES_MODULE_ID = lambda: (  # noqa: E731
    (module := sys.modules.get(f"{PACKAGE}.pipelines.iris.nodes")) and id(module)
)


def test_a_wheel_given_again_after_another_is_what_the_cluster_runs(
    venv: Path, packaged: Path, tmp_path: Path
):
    """Builds stay installed-once per environment: after wheel A, then wheel B,
    the cluster's environment holds B. A rollback to the very same A file must
    run A again (it ran B: A's install was skipped as done before), and so must
    A after an upload of B (it ran the upload, first on the workers' path)."""
    project = tmp_path / "iris-dask"
    shutil.copytree(packaged, project)
    wheels = wheels_of_versions(venv, project, "AB")
    ran, modules = [], []
    with cluster_without_project(venv, tmp_path) as cluster:
        for version in ("A", "B", "A", "A", "upload B", "A"):
            if version == "upload B":
                set_code_version(project, "B")
                code = "dask_client.upload_project=true"
            else:
                code = (
                    f"dask_client.install_wheel={wheels[version].relative_to(project)}"
                )
            result = kedro_in(
                venv,
                "run",
                RUN_ON_DASK,
                "--nodes=split_data",
                f"--params=dask_client.address={cluster.address},{code}",
                cwd=project,
            )
            assert result.returncode == 0, result.output
            ran.append(ran_code_version(result.output))
            with cluster.client() as client:
                # Which module object each worker's node code comes from.
                modules.append(client.run(NODES_MODULE_ID, nanny=False))
    assert ran == [["A"], ["B"], ["A"], ["A"], ["B"], ["A"]]
    # A run of the build in use keeps the modules: what a concurrent run of it
    # made stays an instance of the classes the nodes see.
    imported = {worker: id_ for worker, id_ in modules[2].items() if id_}
    assert imported, modules
    assert {worker: modules[3][worker] for worker in imported} == imported


def test_a_wheel_of_a_distribution_named_otherwise_runs_its_own_code(
    venv: Path, packaged: Path, tmp_path: Path
):
    """pyproject's [project] name need not be the package's: wheel A, then wheel B
    of the distribution ``acme-iris`` run A, then B, on one worker (B's modules
    replace A's, which it had imported)."""
    project = tmp_path / "iris-dask"
    shutil.copytree(packaged, project)
    pyproject = project / "pyproject.toml"
    named = f'\nname = "{PACKAGE}"\n'  # [project]'s, not [tool.kedro]'s package_name
    assert named in pyproject.read_text()
    renamed = named.replace(f'"{PACKAGE}"', '"acme-iris"')
    pyproject.write_text(pyproject.read_text().replace(named, renamed))
    wheels = wheels_of_versions(venv, project, "AB", distribution="acme_iris")
    ran = []
    with cluster_without_project(venv, tmp_path, n_workers=1) as cluster:
        for version in "AB":
            wheel = wheels[version].relative_to(project)
            result = kedro_in(
                venv,
                "run",
                RUN_ON_DASK,
                "--nodes=split_data",
                f"--params=dask_client.address={cluster.address},"
                f"dask_client.install_wheel={wheel}",
                cwd=project,
            )
            assert result.returncode == 0, result.output
            ran.append(ran_code_version(result.output))
    assert ran == [["A"], ["B"]]


def test_a_wheel_pip_cannot_install_fails_the_run_with_pips_error(
    venv: Path, packaged: Path, tmp_path: Path
):
    """The install travels by value to a scheduler without the project: Dask's own
    choice of pickler sent it by reference (the scheduler failed to unpickle it)
    unless the wheel's bytes happened to hold ``__main__``, as kedro's do."""
    project = tmp_path / "iris-dask"
    shutil.copytree(packaged, project)
    broken = wheel_of(project)
    broken.write_bytes(b"not a zip archive")
    with cluster_without_project(
        venv, tmp_path, scheduler_env=ENV_WITHOUT_PROJECT
    ) as cluster:
        result = kedro_in(
            venv,
            "run",
            RUN_ON_DASK,
            f"--params=dask_client.address={cluster.address},"
            f"dask_client.install_wheel={broken.relative_to(project)}",
            cwd=project,
        )

    message = refusal(result, f"Error: Could not install {broken.name} on the Dask")
    assert f"RuntimeError: `pip install {broken.name}` failed in" in message
    assert "is invalid" in message
    assert "needs pip and write access" in message
    assert not data_files(project)
