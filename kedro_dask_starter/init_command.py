"""``kedro dask init``: adds the starter's Dask runner to a project that exists.

Registered through the ``kedro.project_commands`` entry point, so Kedro offers it
inside any project once this package is installed. It copies what a generated
project has and an existing one lacks (the ``runner/`` package, ``cli.py``, the
``dask_client`` block, the requirements) and never overwrites a user's edit
unasked. It imports nothing of Dask: the project may not have it installed yet.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import click
import yaml
from kedro.framework.project import settings
from kedro.framework.startup import ProjectMetadata

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO = "{{ cookiecutter.repo_name }}"
_SOURCE = Path(_REPO, "src", "{{ cookiecutter.python_package }}")
_UNRENDERED = "{{ cookiecutter."
#: The template's requirements that the runner itself needs (not the example's).
_RUNNER_NEEDS = ("distributed", "bokeh", "psutil")
_PARAMETER_SUFFIXES = {".yml", ".yaml", ".json"}


@click.group(name="kedro-dask-starter")
def commands() -> None:
    """Project commands of kedro-dask-starter."""


@commands.group(name="dask")
def dask() -> None:
    """Run this project's pipelines on Dask."""


@dask.command(name="init")
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite runner files that differ from the starter's (your edits).",
)
@click.pass_obj
def init(metadata: ProjectMetadata, force: bool) -> None:
    """Add the DaskRunner to this project: src/<package>/runner/, cli.py (if the
    project has none), a dask_client block and requirements. Safe to run again."""
    template = _template_root()
    package = metadata.source_dir / metadata.package_name
    if not package.is_dir():
        raise click.ClickException(f"The project's package {package} is missing.")
    if (package / "runner.py").exists():
        raise click.ClickException(
            f"{_shown(package / 'runner.py', metadata)} exists: the runner/ folder "
            f"this writes would hide it from imports ({metadata.package_name}.runner). "
            "Rename it (e.g. to runners.py), then run `kedro dask init` again."
        )
    written, kept = _write_runner(template, metadata, package / "runner", force)
    changed = [
        written,
        _write_cli(template, metadata, package / "cli.py", kept),
        _write_dask_client(template, metadata),
        _add_requirements(template, metadata),
    ]
    if not any(changed):
        click.echo("Nothing changed: the project already has the Dask runner.")
    click.echo(
        "Next steps:\n  pip install -r requirements.txt\n"
        f"  kedro run --runner={metadata.package_name}.runner.DaskRunner"
    )


def _template_root() -> Path:
    """The folder holding the template: inside the installed package (the wheel
    copies it there), else the repository root of a checkout."""
    for root in (_PACKAGE_DIR / "template", _PACKAGE_DIR.parent):
        if (root / _REPO).is_dir():
            return root
    raise click.ClickException(f"The starter's template is missing: {_PACKAGE_DIR}")


def _render(path: Path, metadata: ProjectMetadata) -> str:
    """The template file with the project's names, as cookiecutter would write it."""
    text = path.read_bytes().decode("utf-8")
    text = text.replace("{{ cookiecutter.python_package }}", metadata.package_name)
    text = text.replace("{{ cookiecutter.project_name }}", metadata.project_name)
    if _UNRENDERED in text:
        raise click.ClickException(f"{path} uses template variables it cannot fill.")
    return text


def _shown(path: Path, metadata: ProjectMetadata) -> str:
    try:
        return path.relative_to(metadata.project_path).as_posix()
    except ValueError:
        return str(path)


def _write_runner(
    template: Path, metadata: ProjectMetadata, target: Path, force: bool
) -> tuple[bool, list[str]]:
    """Step 1: the runner package; a file that differs is kept unless --force.
    Returns whether it wrote any, and the files it kept."""
    source = template / _SOURCE / "runner"
    written: list[Path] = []
    kept: list[str] = []
    same = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        destination = target / path.relative_to(source)
        content = _render(path, metadata).encode("utf-8")
        if destination.exists() and destination.read_bytes() == content:
            same += 1
        elif destination.exists() and not force:
            kept.append(destination.relative_to(target).as_posix())
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(content)
            written.append(destination)
    where = _shown(target, metadata) + "/"
    message = f"runner: wrote {len(written)} file(s) to {where}" if written else ""
    if kept:
        message += "; " if message else f"runner: {where}: "
        message += (
            f"kept {len(kept)} file(s) that differ from the starter's (your edits?): "
            f"{', '.join(kept)}; `kedro dask init --force` overwrites them"
        )
    click.echo(message or f"runner: {where} is up to date ({same} files)")
    return bool(written), kept


def _write_cli(
    template: Path, metadata: ProjectMetadata, target: Path, runner_kept: list[str]
) -> bool:
    """Step 2: the starter's cli.py, only where the project has none of its own, and
    not next to kept runner files (an older runner's) it may not import from."""
    rendered = _render(template / _SOURCE / "cli.py", metadata)
    shown = _shown(target, metadata)
    if not target.exists() and runner_kept:
        click.echo(
            f"cli.py: not written: it imports from the starter's runner/, whose "
            f"files {', '.join(runner_kept)} differ here; `kedro dask init --force` "
            "writes both"
        )
        return False
    if not target.exists():
        target.write_bytes(rendered.encode("utf-8"))
        click.echo(
            f"cli.py: wrote {shown}: `kedro run` and `python -m "
            f"{metadata.package_name}` build the DaskRunner from dask_client"
        )
        return True
    if target.read_bytes() == rendered.encode("utf-8"):
        click.echo(f"cli.py: {shown} is already the starter's")
        return False
    click.echo(
        f"cli.py: left {shown} as it is (the project's own). For `kedro run` to "
        "build the DaskRunner from dask_client with one-paragraph errors, merge "
        "into it:\n\n"
        + textwrap.indent(_merge_instructions(rendered), "    ")
        + "\n\nThe runner works without this too: `kedro run --runner="
        f"{metadata.package_name}.runner.DaskRunner` reads the dask_client "
        "parameters from the catalog itself (params:dask_client)."
    )
    return False


def _merge_instructions(source: str) -> str:
    """The parts of the starter's cli.py to merge into a project's own: the
    ``_instantiate_runner`` helper, the imports it needs, and the call and the
    ``except`` clause around ``session.run``, cut from the source."""
    tree = ast.parse(source)
    lines = source.splitlines()

    def text(node: ast.stmt | ast.excepthandler) -> str:
        return textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno]))

    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    helper, run = functions.get("_instantiate_runner"), functions.get("run")
    handlers = [
        handler
        for node in ast.walk(run or tree)
        if isinstance(node, ast.Try)
        for handler in node.handlers
        if handler.type is not None and "DaskSetupError" in ast.unparse(handler.type)
    ]
    calls = [
        node
        for node in ast.walk(run or tree)
        if isinstance(node, ast.keyword) and node.arg == "runner"
    ]
    if helper is None or not handlers or not calls:
        return "(the starter's cli.py has changed: compare yours with it)"
    used = {
        n.id
        for s in (helper, handlers[0])
        for n in ast.walk(s)
        if isinstance(n, ast.Name)
    }
    needed: list[str] = []
    for node in reversed(tree.body):  # assignments first: they use imports
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)):
            bound = {
                (a.asname or a.name).split(".")[0] for a in getattr(node, "names", [])
            } | {t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)}
            if bound & used:
                needed.insert(0, text(node))
                used |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return "\n\n".join(
        [
            "# imports (and the logger) at the top of cli.py:\n" + "\n".join(needed),
            "# in `run`, build the runner with the helper, from the values of --runner,\n"
            "# --async and --runner-params, the session, and --params (your `run`'s\n"
            "# names for them; `{}` for an option it does not have):\n"
            + ast.unparse(calls[0]),
            "# and around `session.run(...)`, a `try` with this clause:\n"
            + text(handlers[0]),
            "# the helper, at module level:\n" + text(helper),
        ]
    )


def _write_dask_client(template: Path, metadata: ProjectMetadata) -> bool:
    """Step 3: the commented dask_client block in parameters_dask.yml, unless a
    parameters file of the base environment already defines dask_client (Kedro
    refuses a key defined twice in one environment)."""
    base = metadata.project_path / settings.CONF_SOURCE
    base /= settings.CONFIG_LOADER_ARGS.get("base_env") or "base"
    for path in sorted(base.rglob("*")):
        parts = path.relative_to(base).parts
        if (
            path.is_file()
            and path.suffix in _PARAMETER_SUFFIXES
            and any(part.startswith("parameters") for part in parts)
            and not any(part.startswith(".") for part in parts)
            and _defines_dask_client(path)
        ):
            click.echo(
                f"dask_client: already defined in {_shown(path, metadata)}, "
                "left as it is"
            )
            return False
    parameters = template / _REPO / "conf/base/parameters.yml"
    lines = _render(parameters, metadata).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("dask_client:"))
    while start and lines[start - 1].startswith("#"):
        start -= 1
    target = base / "parameters_dask.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# The DaskRunner's settings, added by `kedro dask init`; Kedro merges this\n"
        "# file with the other parameters*.yml files of this environment.\n"
    )
    yours = target.read_text(encoding="utf-8") if target.exists() else ""
    if yours:  # the project's own keys stay: the block goes after them
        header = yours.rstrip("\n") + "\n\n" + header
    target.write_bytes((header + "".join(lines[start:])).encode("utf-8"))
    verb = "added the commented block to" if yours else "wrote the commented block to"
    click.echo(f"dask_client: {verb} {_shown(target, metadata)}")
    return True


def _defines_dask_client(path: Path) -> bool:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:  # e.g. a tag of its own: a top-level key still shows
        return (
            re.search(r"^['\"]?dask_client['\"]?\s*:", text, re.MULTILINE) is not None
        )
    return isinstance(loaded, dict) and "dask_client" in loaded


def _name(requirement: str) -> str | None:
    """A requirement line's distribution name, normalised (PEP 503)."""
    line = requirement.split("#", 1)[0].strip()
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return re.sub(r"[-_.]+", "-", match.group()).lower() if match else None


def _add_requirements(template: Path, metadata: ProjectMetadata) -> bool:
    """Step 4: appends the runner's requirements that requirements.txt lacks."""
    needs = [
        line.strip()
        for line in (template / _REPO / "requirements.txt").read_text().splitlines()
        if _name(line) in _RUNNER_NEEDS
    ]
    target = metadata.project_path / "requirements.txt"
    if not target.is_file():
        click.echo(
            f"requirements: no requirements.txt; add {', '.join(needs)} to the "
            "project's dependencies"
        )
        return False
    text = target.read_bytes().decode("utf-8")
    present = {_name(line) for line in text.splitlines()}
    missing = [line for line in needs if _name(line) not in present]
    if not missing:
        click.echo(
            f"requirements: {_shown(target, metadata)} already lists "
            f"{', '.join(_RUNNER_NEEDS)}"
        )
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    target.write_bytes((text + "\n".join(missing) + "\n").encode("utf-8"))
    click.echo(
        f"requirements: added {', '.join(missing)} to {_shown(target, metadata)} "
        "(not installed: run `pip install -r requirements.txt`)"
    )
    return True
