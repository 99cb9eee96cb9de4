"""Generating a project: with plain cookiecutter and with `kedro new --starter`."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import yaml

from .conftest import ROOT, kedro

EXPECTED_FILES = {
    ".gitignore",
    "README.md",
    "pyproject.toml",
    "requirements.txt",
    "conf/README.md",
    "conf/logging.yml",
    "conf/base/catalog.yml",
    "conf/base/parameters.yml",
    "conf/local/credentials.yml",
    "data/01_raw/iris.csv",
    "src/{pkg}/__init__.py",
    "src/{pkg}/__main__.py",
    "src/{pkg}/cli.py",
    "src/{pkg}/settings.py",
    "src/{pkg}/pipeline_registry.py",
    "src/{pkg}/runner/__init__.py",
    "src/{pkg}/runner/dask_runner.py",
    "src/{pkg}/pipelines/iris/pipeline.py",
    "src/{pkg}/pipelines/iris/nodes.py",
    "tests/test_run.py",
    "tests/test_cli.py",
    "tests/runner/test_parity.py",
}
#: What the generated modules define at their top level, for the README, the
#: generated README and `kedro run` (the post-generation hook checks only what a
#: user's `kedro new` could lose: that the runner exports DaskRunner, cli.py).
DEFINED = {
    "src/{pkg}/runner/__init__.py": {"DaskRunner", "__all__"},
    "src/{pkg}/runner/dask_runner.py": {"DaskRunner"},
    "src/{pkg}/cli.py": {"cli", "run", "_instantiate_runner"},
}
DATA_FOLDERS = [
    f"data/{name}"
    for name in (
        "01_raw",
        "02_intermediate",
        "03_primary",
        "04_feature",
        "05_model_input",
        "06_models",
        "07_model_output",
        "08_reporting",
    )
]


def assert_project(project: Path, package: str, name: str) -> None:
    files = {
        p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()
    }
    expected = {path.format(pkg=package) for path in EXPECTED_FILES}
    assert expected <= files, f"missing: {sorted(expected - files)}"
    assert all((project / folder).is_dir() for folder in DATA_FOLDERS)
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["kedro"]
    assert metadata["package_name"] == package
    assert metadata["project_name"] == name
    for path, names in DEFINED.items():
        defined = top_level_names(project / path.format(pkg=package))
        assert names <= defined, f"{path} lacks {sorted(names - defined)}"
    parameters = yaml.safe_load((project / "conf/base/parameters.yml").read_text())
    assert isinstance(parameters["dask_client"], dict)
    for path in project.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".yml", ".toml", ".md", ".txt"}:
            assert "cookiecutter" not in path.read_text().replace(
                "cookiecutter.json", ""
            ), f"{path} mentions cookiecutter"


def top_level_names(module: Path) -> set[str]:
    """The names a module defines or imports at its top level."""
    names = set()
    for statement in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
            names.add(statement.name)
        elif isinstance(statement, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in statement.names)
        elif isinstance(statement, ast.Assign):
            names.update(t.id for t in statement.targets if isinstance(t, ast.Name))
    return names


def test_cookiecutter_no_input(rendered: Path):
    assert rendered.name == "iris-dask"
    assert_project(rendered, "iris_dask", "Iris Dask")


def test_files_without_variables_render_unchanged(rendered: Path):
    """Catches Python or YAML that Jinja would misread, such as a literal '{{'."""
    template = ROOT / "{{ cookiecutter.repo_name }}"
    for source in template.rglob("*"):
        if not source.is_file() or "{{" in source.read_text(errors="ignore"):
            continue
        relative = source.relative_to(template).as_posix()
        relative = relative.replace("{{ cookiecutter.python_package }}", "iris_dask")
        assert (rendered / relative).read_bytes() == source.read_bytes(), relative


def test_kedro_new_with_a_config_file(tmp_path: Path):
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump({"project_name": "Flower Power", "output_dir": str(tmp_path)})
    )
    result = kedro("new", f"--starter={ROOT}", f"--config={config}", cwd=tmp_path)
    assert result.returncode == 0, result.output
    project = tmp_path / "flower-power"
    assert_project(project, "flower_power", "Flower Power")
    requirements = (project / "requirements.txt").read_text()
    assert "kedro~=1.7" in requirements


def test_kedro_new_with_a_name(tmp_path: Path):
    result = kedro(
        "new", f"--starter={ROOT}", "--name=Iris Dask", "--telemetry=no", cwd=tmp_path
    )
    assert result.returncode == 0, result.output
    assert_project(tmp_path / "iris-dask", "iris_dask", "Iris Dask")
