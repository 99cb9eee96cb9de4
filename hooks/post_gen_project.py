"""Checks the generated project before handing it over.

On any problem it prints every missing piece and exits non-zero, so that
cookiecutter removes the half-made project instead of leaving it behind.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import yaml

CONTEXT = json.loads(r"""{{ cookiecutter | tojson }}""")

_UNRENDERED = "{" + "{ cookiecutter."  # spelt in two parts so it renders as itself


def problems(project: Path, package: str) -> list[str]:
    """Everything missing or broken in the project generated at ``project``."""
    source = project / "src" / package
    found = [
        *_missing_names(source / "runner" / "__init__.py", {"DaskRunner", "__all__"}),
        *_missing_names(source / "runner" / "dask_runner.py", {"DaskRunner"}),
        *_missing_names(source / "cli.py", {"cli", "run", "_instantiate_runner"}),
        *_dask_client_problems(project / "conf" / "base" / "parameters.yml"),
    ]
    init = source / "runner" / "__init__.py"
    if init.is_file() and "DaskRunner" not in _exported(init):
        found.append(f"{init.relative_to(project)} does not list DaskRunner in __all__")
    for path in sorted(project.rglob("*")):
        if path.is_file() and _UNRENDERED in _text(path):
            found.append(
                f"{path.relative_to(project)} still holds cookiecutter variables"
            )
    return found


def _missing_names(path: Path, names: set[str]) -> list[str]:
    if not path.is_file():
        return [f"{path} is missing"]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defined = set()
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
            defined.add(statement.name)
        elif isinstance(statement, ast.ImportFrom):
            defined.update(alias.asname or alias.name for alias in statement.names)
        elif isinstance(statement, ast.Assign):
            defined.update(t.id for t in statement.targets if isinstance(t, ast.Name))
    return [f"{path} does not define {name}" for name in sorted(names - defined)]


def _exported(path: Path) -> list[str]:
    for statement in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in statement.targets
        ):
            return list(ast.literal_eval(statement.value))
    return []


def _dask_client_problems(path: Path) -> list[str]:
    if not path.is_file():
        return [f"{path} is missing"]
    try:
        parameters = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        return [f"{path} is not valid YAML: {exc}"]
    if "dask_client" not in parameters:
        return [f"{path} has no dask_client block"]
    if not isinstance(parameters["dask_client"], (dict, type(None))):
        return [f"{path}: dask_client must be a mapping of settings"]
    return []


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


def main() -> None:
    found = problems(Path.cwd(), CONTEXT["python_package"])
    if found:
        print(
            "The generated project is incomplete, so it was removed:",
            *found,
            sep="\n  - ",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
