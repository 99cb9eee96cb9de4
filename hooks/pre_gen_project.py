"""Refuses names that would generate a broken project, before any file is written.

Cookiecutter renders this file with the template's context, passed as JSON so that
no name (quotes included) can break or inject into the code.
"""

from __future__ import annotations

import json
import keyword
import re
import sys

CONTEXT = json.loads(r"""{{ cookiecutter | tojson }}""")

# Importing the project package must not shadow what the project itself imports.
_DEPENDENCIES = {"kedro", "kedro_datasets", "dask", "distributed", "pandas", "numpy"}
# Kedro 1.6 is the oldest 1.x with the private APIs the generated project needs
# (listed in its runner/kedro_internals.py); 2.x may change them.
_SUPPORTED_KEDRO = re.compile(r"^1\.([6-9]|\d{2,})(\.|$)")


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
    version = str(context["kedro_version"])
    if not _SUPPORTED_KEDRO.match(version):
        found.append(
            f"This starter needs Kedro 1.6 or a newer 1.x, but kedro_version is "
            f"{version!r}. Run `pip install 'kedro>=1.6,<2'` and `kedro new` again."
        )
    return found


def main() -> None:
    found = problems(CONTEXT)
    if found:
        print("Cannot create the project:", *found, sep="\n  - ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
