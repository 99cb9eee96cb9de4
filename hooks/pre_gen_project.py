"""Refuses names that would generate a broken project, before any file is written.

Cookiecutter renders this file with the template's context, passed as JSON so that
no name (quotes included) can break or inject into the code.
"""

from __future__ import annotations

import json
import keyword
import operator
import re
import sys

CONTEXT = json.loads(r"""{{ cookiecutter | tojson }}""")

# Importing the project package must not shadow what the project itself imports.
_DEPENDENCIES = {"kedro", "kedro_datasets", "dask", "distributed", "pandas", "numpy"}
_COMPARISONS = {">=": operator.ge, "<": operator.lt}


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version, three of them: "1.7" -> (1, 7, 0)."""
    numbers = [int(n) for n in re.findall(r"\d+", re.match(r"[\d.]*", version)[0])]
    return tuple((numbers + [0, 0, 0])[:3])


def kedro_supported(version: str, versions: str) -> bool:
    """Whether Kedro ``version`` is in ``versions`` (cookiecutter.json's
    ``_kedro_versions``, e.g. ">=1.6,<2": the oldest Kedro with the private APIs
    listed in the project's runner/kedro_internals.py, and not 2.x, which may
    change them), compared by release numbers; ">=" and "<" are understood."""
    clauses = re.findall(r"(>=|<)\s*([\d.]+)", versions)
    return all(
        _COMPARISONS[op](_release(version), _release(bound)) for op, bound in clauses
    )


def problems(context: dict) -> list[str]:
    """Every reason the context cannot make a working project, with what to do."""
    found = []
    package = context["python_package"]
    suggestion = re.sub(r"\W", "_", package).strip("_").lower() or "my_project"
    if suggestion[0].isdigit():
        suggestion = f"project_{suggestion}"
    if not package.isidentifier():
        found.append(
            f"python_package {package!r} is not a valid Python identifier "
            f"(letters, digits and underscores, not starting with a digit). "
            f"Try python_package={suggestion!r}."
        )
    elif keyword.iskeyword(package) or package in sys.stdlib_module_names:
        found.append(
            f"python_package {package!r} is a Python keyword or standard library "
            f"module, so importing it would not import your project. "
            f"Try python_package='{package}_project'."
        )
    elif package in _DEPENDENCIES:
        found.append(
            f"python_package {package!r} would shadow the {package} package that "
            f"the project depends on. Try python_package='{package}_project'."
        )
    repo = context["repo_name"]
    if not repo or repo in {".", ".."} or "/" in repo or "\\" in repo:
        found.append(
            f"repo_name {repo!r} is not a folder name. "
            f"Try repo_name={suggestion.replace('_', '-')!r}."
        )
    version, versions = str(context["kedro_version"]), context["_kedro_versions"]
    if not kedro_supported(version, versions):
        found.append(
            f"This starter needs Kedro {versions}, but kedro_version is {version!r}. "
            f"Run `pip install 'kedro{versions}'` and `kedro new` again."
        )
    return found


def main() -> None:
    found = problems(CONTEXT)
    if found:
        print("Cannot create the project:", *found, sep="\n  - ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
