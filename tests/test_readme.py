"""The README's two commands are the ones CI runs; its Kedro versions are
cookiecutter.json's."""

from __future__ import annotations

import json
import re

from .conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_the_demo_and_the_test_command():
    commands = readme_commands()
    assert len(commands) == 2
    assert "nox -s demo" in commands[0]
    assert "nox -s lint tests" in commands[1]


def test_ci_runs_both_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in readme_commands():
        assert command in ci


def test_the_readme_states_the_supported_kedro_versions():
    context = json.loads((ROOT / "cookiecutter.json").read_text())
    assert (
        f"Kedro versions: `{context['_kedro_versions']}`"
        in (ROOT / "README.md").read_text()
    )


def test_the_project_readme_says_why_each_runner_module_exists():
    project = ROOT / "{{ cookiecutter.repo_name }}"
    runner = project / "src" / "{{ cookiecutter.python_package }}" / "runner"
    text = (project / "README.md").read_text()
    section = text.split("## Inside `runner/`", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(\w+\.py)` \|", section, flags=re.MULTILINE)
    modules = sorted(p.name for p in runner.glob("*.py") if p.name != "__init__.py")
    assert sorted(listed) == modules
