"""The pre- and post-generation hooks: imported as rendered, and run by cookiecutter."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from cookiecutter.environment import StrictEnvironment
from cookiecutter.exceptions import FailedHookException

from .conftest import ROOT, copy_template, render
from .shared import hook_scripts_removed

KEDRO_VERSIONS = json.loads((ROOT / "cookiecutter.json").read_text())["_kedro_versions"]
GOOD_CONTEXT = {
    "project_name": "Iris Dask",
    "repo_name": "iris-dask",
    "python_package": "iris_dask",
    "kedro_version": "1.7.0",
    "tools": "['None']",
    "example_pipeline": "False",
    "_kedro_versions": KEDRO_VERSIONS,
}


def rendered_hook(name: str, tmp_path: Path, context: dict | None = None) -> ModuleType:
    """Renders a hook the way cookiecutter does, then imports it."""
    source = (ROOT / "hooks" / f"{name}.py").read_text()
    text = (
        StrictEnvironment()
        .from_string(source)
        .render(cookiecutter=context or GOOD_CONTEXT)
    )
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestPreGeneration:
    def test_context_with_quotes_cannot_break_the_hook(self, tmp_path):
        context = {**GOOD_CONTEXT, "project_name": 'It\'s "quoted"\\'}
        hook = rendered_hook("pre_gen_project", tmp_path, context)
        assert hook.CONTEXT["project_name"] == 'It\'s "quoted"\\'

    def test_a_good_context_passes(self, tmp_path):
        assert rendered_hook("pre_gen_project", tmp_path).problems(GOOD_CONTEXT) == []

    def test_the_supported_kedro_versions_are_a_range_the_hook_reads(self):
        assert re.fullmatch(r"(>=|<)[\d.]+(,(>=|<)[\d.]+)*", KEDRO_VERSIONS)

    @pytest.mark.parametrize(
        "version, supported",
        [
            ("1.6.0", True),
            ("1.6", True),
            ("1.7.0", True),
            ("1.8.0rc1", True),
            ("1.10.2", True),
            ("0.19.14", False),
            ("1.5.9", False),
            ("2.0.0rc1", False),
            ("2.0.0", False),
        ],
    )
    def test_kedro_versions_are_compared_by_release(self, tmp_path, version, supported):
        hook = rendered_hook("pre_gen_project", tmp_path)
        assert hook.kedro_supported(version, ">=1.6,<2") is supported

    def test_an_unsupported_kedro_says_what_to_install(self, tmp_path):
        hook = rendered_hook("pre_gen_project", tmp_path)
        [found] = hook.problems({**GOOD_CONTEXT, "kedro_version": "0.19.14"})
        assert f"This starter needs Kedro {KEDRO_VERSIONS}, but" in found
        assert f"Run `pip install 'kedro{KEDRO_VERSIONS}'`" in found

    @pytest.mark.parametrize(
        "changes, expected",
        [
            (
                {"python_package": "1st_project"},
                "Try python_package='project_1st_project'",
            ),
            ({"python_package": "my-project"}, "Try python_package='my_project'"),
            ({"python_package": "class"}, "Try python_package='class_project'"),
            ({"python_package": "json"}, "standard library"),
            ({"python_package": "pandas"}, "would shadow the pandas package"),
            ({"repo_name": "a/b"}, "is not a folder name"),
        ],
    )
    def test_bad_names_say_what_to_type_instead(self, tmp_path, changes, expected):
        hook = rendered_hook("pre_gen_project", tmp_path)
        found = hook.problems({**GOOD_CONTEXT, **changes})
        assert len(found) == 1 and expected in found[0]

    def test_cookiecutter_stops_before_writing_anything(self, tmp_path):
        with pytest.raises(FailedHookException):
            render(tmp_path / "out", project_name="json")
        assert list((tmp_path / "out").iterdir()) == []


class TestPostGeneration:
    def test_a_complete_project_passes(self, rendered, tmp_path):
        hook = rendered_hook("post_gen_project", tmp_path)
        assert hook.problems(rendered, "iris_dask") == []

    def test_every_missing_piece_is_reported(self, rendered, tmp_path):
        project = tmp_path / "broken"
        shutil.copytree(rendered, project)
        package = project / "src" / "iris_dask"
        (package / "runner" / "__init__.py").write_text("__all__ = []\n")
        (package / "cli.py").unlink()
        (project / "README.md").write_text("{" + "{ cookiecutter.project_name }}\n")
        found = rendered_hook("post_gen_project", tmp_path).problems(
            project, "iris_dask"
        )
        assert found == [
            "src/iris_dask/cli.py is missing",
            "src/iris_dask/runner/__init__.py does not export DaskRunner (in __all__)",
            "README.md still holds cookiecutter variables",
        ]

    def test_a_missing_runner_package_is_reported(self, rendered, tmp_path):
        project = tmp_path / "broken"
        shutil.copytree(rendered, project)
        shutil.rmtree(project / "src" / "iris_dask" / "runner")
        found = rendered_hook("post_gen_project", tmp_path).problems(
            project, "iris_dask"
        )
        assert found == ["src/iris_dask/runner/__init__.py is missing"]

    def test_cookiecutter_removes_a_broken_project(self, tmp_path):
        template = copy_template(tmp_path / "template")
        package = template / "{{ cookiecutter.repo_name }}" / "src"
        (package / "{{ cookiecutter.python_package }}" / "cli.py").unlink()
        with pytest.raises(FailedHookException), hook_scripts_removed():
            from cookiecutter.main import cookiecutter

            cookiecutter(str(template), no_input=True, output_dir=str(tmp_path / "out"))
        assert not (tmp_path / "out" / "iris-dask").exists()
