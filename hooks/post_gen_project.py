"""Checks the generated project before handing it over: the runner package
exports DaskRunner, cli.py is there and no cookiecutter variable is left.

On any problem it prints each one and exits non-zero, so that cookiecutter
removes the half-made project instead of leaving it behind. That the template
itself is complete is for the template's tests to check, not for every `kedro new`.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

CONTEXT = json.loads(r"""{{ cookiecutter | tojson }}""")

_UNRENDERED = "{" + "{ cookiecutter."  # spelt in two parts so it renders as itself


def problems(project: Path, package: str) -> list[str]:
    """Everything missing in the project generated at ``project``."""
    runner = Path("src", package, "runner", "__init__.py")
    cli = Path("src", package, "cli.py")
    found = [
        f"{path} is missing" for path in (runner, cli) if not (project / path).is_file()
    ]
    if (project / runner).is_file() and "DaskRunner" not in _exported(project / runner):
        found.append(f"{runner} does not export DaskRunner (in __all__)")
    for path in sorted(project.rglob("*")):
        if path.is_file() and _UNRENDERED in path.read_text(errors="ignore"):
            found.append(
                f"{path.relative_to(project)} still holds cookiecutter variables"
            )
    return found


def _exported(path: Path) -> list[str]:
    """The names in the module's ``__all__``."""
    for statement in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in statement.targets
        ):
            return list(ast.literal_eval(statement.value))
    return []


def main() -> None:
    # pip byte-compiles the template's modules where it installs the starter, and
    # cookiecutter copies that bytecode (of template paths) into the project.
    for cache in list(Path.cwd().rglob("__pycache__")):
        shutil.rmtree(cache)
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
