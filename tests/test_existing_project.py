"""`kedro dask init` on projects made by Kedro's own `kedro new` (no starter): the
plugin command of the pip-installed starter adds the runner, and the project's
pipelines then give on Dask the very files they give on SequentialRunner.

Like tests/test_packaging.py, everything runs in a fresh virtual environment
with this repository pip-installed (so the entry point is registered).
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import ENV, ROOT, data_files, refusal, run_command
from .test_packaging import kedro_in, tree, venv  # noqa: F401  (venv: a fixture)

SMALL_CLUSTER = (
    "--runner-params=n_workers=2,threads_per_worker=1,dashboard_address=127.0.0.1:0"
)
TEMPLATE_RUNNER = (
    ROOT / "{{ cookiecutter.repo_name }}/src/{{ cookiecutter.python_package }}/runner"
)


def on_dask(package: str) -> str:
    return f"--runner={package}.runner.DaskRunner"


def init(venv: Path, project: Path, *args: str):  # noqa: F811
    """`kedro dask init`, writing no bytecode: every file it leaves is its own."""
    env = {**ENV, "PYTHONDONTWRITEBYTECODE": "1"}
    return run_command(
        [str(venv / "bin" / "kedro"), "dask", "init", *args], project, env=env
    )


def write(project: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def remove_outputs(project: Path) -> None:
    for path in (project / "data").rglob("*"):
        if path.is_file() and "01_raw" not in path.parts:
            path.unlink()


def same_outputs_on_both_runners(venv: Path, project: Path, package: str):  # noqa: F811
    """Runs the project on SequentialRunner, then (outputs removed) on DaskRunner;
    returns what each run persisted."""
    sequential = kedro_in(venv, "run", cwd=project)
    assert sequential.returncode == 0, sequential.output
    assert "Pipeline execution completed successfully" in sequential.output
    from_sequential = data_files(project)
    remove_outputs(project)
    dask = kedro_in(venv, "run", on_dask(package), SMALL_CLUSTER, cwd=project)
    assert dask.returncode == 0, dask.output
    assert "Starting a Dask cluster" in dask.output, dask.output
    return from_sequential, data_files(project)


def kedro_new(venv: Path, folder: Path, name: str) -> Path:  # noqa: F811
    """A project from Kedro's own template: no tools, no example, no starter."""
    folder.mkdir(parents=True, exist_ok=True)
    made = kedro_in(
        venv,
        "new",
        f"--name={name}",
        "--tools=none",
        "--example=n",
        "--telemetry=no",
        cwd=folder,
    )
    assert made.returncode == 0, made.output
    project = folder / name
    assert not (project / "src" / name / "cli.py").exists()
    return project


# --- a small pipeline of the tests' own ----------------------------------------

SMALL_PIPELINE = {
    "src/plain/pipelines/small/__init__.py": """
        from .pipeline import create_pipeline

        __all__ = ["create_pipeline"]
        """,
    "src/plain/pipelines/small/nodes.py": """
        import pandas as pd


        def scale(readings: pd.DataFrame, factor: float) -> pd.DataFrame:
            return readings.assign(value=readings["value"] * factor)


        def totals(scaled: pd.DataFrame) -> dict:
            return {"rows": len(scaled), "sum": round(float(scaled["value"].sum()), 6)}


        def by_group(scaled: pd.DataFrame) -> pd.DataFrame:
            return scaled.groupby("group", as_index=False)["value"].sum()


        def summary(totals: dict, groups: pd.DataFrame) -> dict:
            return {"totals": totals, "groups": groups.to_dict("list")}
        """,
    "src/plain/pipelines/small/pipeline.py": """
        from kedro.pipeline import Pipeline, node

        from .nodes import by_group, scale, summary, totals


        def create_pipeline(**kwargs) -> Pipeline:
            return Pipeline(
                [
                    node(scale, ["readings", "params:factor"], "scaled", name="scale"),
                    node(totals, "scaled", "totals", name="totals"),
                    node(by_group, "scaled", "groups", name="by_group"),
                    node(summary, ["totals", "groups"], "summary", name="summary"),
                ]
            )
        """,
    "conf/base/catalog.yml": """
        readings:
          type: pandas.CSVDataset
          filepath: data/01_raw/readings.csv
        scaled:
          type: pandas.CSVDataset
          filepath: data/02_intermediate/scaled.csv
        totals:
          type: json.JSONDataset
          filepath: data/08_reporting/totals.json
        groups:
          type: pandas.CSVDataset
          filepath: data/03_primary/groups.csv
        summary:
          type: pickle.PickleDataset
          filepath: data/06_models/summary.pickle
        """,
    "data/01_raw/readings.csv": "group,value\n"
    + "".join(f"{'abc'[i % 3]},{i * 0.5}\n" for i in range(30)),
}
SMALL_OUTPUTS = {
    "02_intermediate/scaled.csv",
    "03_primary/groups.csv",
    "06_models/summary.pickle",
    "08_reporting/totals.json",
}


def add_small_pipeline(project: Path) -> None:
    write(project, SMALL_PIPELINE)
    with (project / "conf/base/parameters.yml").open("a") as parameters:
        parameters.write("\nfactor: 2.5\n")


@pytest.fixture(scope="module")
def plain(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """`kedro new` plus the small pipeline, untouched by `kedro dask init`."""
    project = kedro_new(venv, tmp_path_factory.mktemp("plain"), "plain")
    add_small_pipeline(project)
    return project


@pytest.fixture(scope="module")
def initialised(
    venv: Path, plain: Path, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
) -> tuple[Path, str]:
    """A copy of ``plain`` after `kedro dask init`, and what the command said."""
    project = tmp_path_factory.mktemp("initialised") / "plain"
    shutil.copytree(plain, project)
    result = init(venv, project)
    assert result.returncode == 0, result.output
    return project, result.output


def copy_of(project: Path, tmp_path: Path) -> Path:
    copy = tmp_path / project.name
    shutil.copytree(project, copy)
    return copy


# --- 1. a plain `kedro new` project -------------------------------------------------


def test_init_adds_the_runner_and_a_plain_project_runs_on_dask(
    venv: Path, initialised: tuple[Path, str], tmp_path: Path  # noqa: F811
):
    project, said = initialised
    project = copy_of(project, tmp_path)

    template_files = sorted(
        path.relative_to(TEMPLATE_RUNNER).as_posix()
        for path in TEMPLATE_RUNNER.rglob("*.py")
    )
    runner = project / "src/plain/runner"
    assert f"runner: wrote {len(template_files)} file(s) to src/plain/runner/" in said
    assert "cli.py: wrote src/plain/cli.py" in said
    assert (
        "dask_client: wrote the commented block to conf/base/parameters_dask.yml"
        in (said)
    )
    assert (
        "requirements: added distributed>=2026.1, bokeh>=3.1, psutil>=5.9 "
        "to requirements.txt" in said
    )
    assert "pip install -r requirements.txt" in said
    assert "kedro run --runner=plain.runner.DaskRunner" in said
    assert sorted(p.relative_to(runner).as_posix() for p in runner.rglob("*.py")) == (
        template_files
    )
    for path in [*runner.rglob("*.py"), project / "src/plain/cli.py"]:
        assert "cookiecutter" not in path.read_text(), path
    assert "--runner=plain.runner.DaskRunner" in (runner / "__init__.py").read_text()
    parameters = yaml.safe_load((project / "conf/base/parameters_dask.yml").read_text())
    assert isinstance(parameters["dask_client"], dict)
    assert (
        (project / "requirements.txt")
        .read_text()
        .endswith("distributed>=2026.1\nbokeh>=3.1\npsutil>=5.9\n")
    )

    sequential, dask = same_outputs_on_both_runners(venv, project, "plain")
    # `python -m plain` goes through the cli.py init wrote: a bad setting is one
    # paragraph, not a traceback.
    source = os.pathsep.join(filter(None, ["src", ENV.get("PYTHONPATH")]))
    refused = run_command(
        [str(venv / "bin/python"), "-m", "plain", on_dask("plain"), SMALL_CLUSTER]
        + ["--params=dask_client.bogus_key=1"],
        project,
        env={**ENV, "PYTHONPATH": source},
    )

    assert set(sequential) == SMALL_OUTPUTS
    assert dask == sequential  # same files, same bytes (pickles by value)
    refusal(refused, "Error: Unknown key(s) in dask_client: bogus_key.")


def test_a_second_init_changes_no_file_and_says_so(
    venv: Path, initialised: tuple[Path, str], tmp_path: Path  # noqa: F811
):
    project = copy_of(initialised[0], tmp_path)
    before = tree(project)

    result = init(venv, project)

    assert result.returncode == 0, result.output
    assert tree(project) == before
    for line in (
        "runner: src/plain/runner/ is up to date",
        "cli.py: src/plain/cli.py is already the starter's",
        "dask_client: already defined in conf/base/parameters_dask.yml",
        "requirements: requirements.txt already lists distributed, bokeh, psutil",
        "Nothing changed: the project already has the Dask runner.",
    ):
        assert line in result.output, result.output


def test_a_runner_file_the_user_edited_is_kept_unless_forced(
    venv: Path, initialised: tuple[Path, str], tmp_path: Path  # noqa: F811
):
    project = copy_of(initialised[0], tmp_path)
    edited = project / "src/plain/runner/cluster.py"
    starter = edited.read_bytes()
    edited.write_bytes(starter + b"# my edit\n")
    (project / "src/plain/runner/time_limits.py").unlink()

    kept = init(venv, project)
    after_kept = edited.read_bytes()
    forced = init(venv, project, "--force")

    assert kept.returncode == 0, kept.output
    assert after_kept == starter + b"# my edit\n"
    assert "runner: wrote 1 file(s) to src/plain/runner/; kept 1 file(s)" in (
        kept.output
    )
    assert "cluster.py; `kedro dask init --force` overwrites them" in kept.output
    assert forced.returncode == 0, forced.output
    assert "runner: wrote 1 file(s) to src/plain/runner/" in forced.output
    assert edited.read_bytes() == starter


def test_an_older_runner_kept_holds_back_the_starters_cli(
    venv: Path, plain: Path, tmp_path: Path  # noqa: F811
):
    """As the old Kedro docs' runner: the starter's cli.py would import from its
    runner/__init__.py names the kept one lacks, and every `kedro` command fail."""
    project = copy_of(plain, tmp_path)
    write(
        project,
        {
            "src/plain/runner/__init__.py": "from .dask_runner import DaskRunner\n",
            "src/plain/runner/dask_runner.py": "from kedro.runner import "
            "SequentialRunner as DaskRunner\n",
        },
    )

    result = init(venv, project)
    still = kedro_in(venv, "run", on_dask("plain"), cwd=project)

    assert result.returncode == 0, result.output
    assert "cli.py: not written: it imports from the starter's runner/" in (
        result.output
    )
    assert not (project / "src/plain/cli.py").exists()
    assert still.returncode == 0, still.output


def test_a_runner_module_of_the_project_is_not_hidden(
    venv: Path, plain: Path, tmp_path: Path  # noqa: F811
):
    project = copy_of(plain, tmp_path)
    write(project, {"src/plain/runner.py": "MY_RUNNER = 1\n"})
    result = init(venv, project)
    assert result.returncode != 0, result.output
    assert "src/plain/runner.py exists: the runner/ folder" in result.output
    assert not (project / "src/plain/runner").exists()


def test_a_parameters_dask_file_of_the_project_keeps_its_keys(
    venv: Path, plain: Path, tmp_path: Path  # noqa: F811
):
    project = copy_of(plain, tmp_path)
    write(project, {"conf/base/parameters_dask.yml": "npartitions: 8\n"})
    result = init(venv, project)
    parameters = yaml.safe_load((project / "conf/base/parameters_dask.yml").read_text())
    assert result.returncode == 0, result.output
    assert parameters["npartitions"] == 8
    assert isinstance(parameters["dask_client"], dict)


# --- 2. a project with its own cli.py ----------------------------------------------

OWN_CLI = '''
    """The project's own commands."""

    import click


    @click.group(name="kedro")
    def cli() -> None:
        """Commands of this project."""


    @cli.command()
    def hello() -> None:
        """Says hello."""
        click.echo("hello from the project's own cli.py")
    '''


def test_a_project_cli_is_left_alone_and_kedros_run_still_runs_on_dask(
    venv: Path, plain: Path, tmp_path: Path  # noqa: F811
):
    project = copy_of(plain, tmp_path)
    write(project, {"src/plain/cli.py": OWN_CLI})
    with (project / "requirements.txt").open("a") as requirements:
        requirements.write("PSUtil>=5.9  # spelt otherwise: the same distribution\n")
    own_cli = (project / "src/plain/cli.py").read_bytes()

    result = init(venv, project)

    assert result.returncode == 0, result.output
    assert (project / "src/plain/cli.py").read_bytes() == own_cli
    said = result.output
    assert "cli.py: left src/plain/cli.py as it is (the project's own)" in said
    assert "from .runner import DaskRunError, DaskRunner, DaskSetupError" in said
    assert (
        "runner=_instantiate_runner(runner, is_async, runner_params, session, params)"
        in said
    )
    assert "`{}` for an option it does not have" in said
    assert "except (DaskSetupError, DaskRunError) as exc:" in said
    assert "def _instantiate_runner(" in said
    assert "reads the dask_client parameters from the catalog itself" in said
    assert "requirements: added distributed>=2026.1, bokeh>=3.1 to" in said
    assert (project / "requirements.txt").read_text().count("psutil") == 0

    hello = kedro_in(venv, "hello", cwd=project)
    one_worker = kedro_in(
        venv,
        "run",
        on_dask("plain"),
        "--runner-params=threads_per_worker=1,dashboard_address=127.0.0.1:0",
        "--params=dask_client.n_workers=1",
        cwd=project,
    )
    bogus = kedro_in(
        venv,
        "run",
        on_dask("plain"),
        SMALL_CLUSTER,
        "--params=dask_client.bogus_key=1",
        cwd=project,
    )

    assert "hello from the project's own cli.py" in hello.output, hello.output
    assert one_worker.returncode == 0, one_worker.output
    assert re.search(
        r"Starting a Dask cluster: distributed\.deploy\.local\.LocalCluster\("
        r"[^)]*\bn_workers=1\b",
        " ".join(one_worker.output.split()),
    ), one_worker.output
    assert set(data_files(project)) == SMALL_OUTPUTS
    assert bogus.returncode != 0, bogus.output
    assert "Unknown key(s) in dask_client: bogus_key" in " ".join(
        bogus.output.split()
    ), bogus.output


# --- 3. a spaceflights-shaped project ------------------------------------------------

SPACEFLIGHTS = {
    "src/spaceflights/pipelines/data_processing/__init__.py": """
        from .pipeline import create_pipeline

        __all__ = ["create_pipeline"]
        """,
    "src/spaceflights/pipelines/data_processing/nodes.py": """
        import pandas as pd


        def _is_true(column: pd.Series) -> pd.Series:
            return column == "t"


        def _parse_percentage(column: pd.Series) -> pd.Series:
            return column.str.replace("%", "").astype(float) / 100


        def _parse_money(column: pd.Series) -> pd.Series:
            return column.str.replace("$", "").str.replace(",", "").astype(float)


        def preprocess_companies(companies: pd.DataFrame) -> pd.DataFrame:
            companies["iata_approved"] = _is_true(companies["iata_approved"])
            companies["company_rating"] = _parse_percentage(companies["company_rating"])
            return companies


        def preprocess_shuttles(shuttles: pd.DataFrame) -> pd.DataFrame:
            shuttles["d_check_complete"] = _is_true(shuttles["d_check_complete"])
            shuttles["moon_clearance_complete"] = _is_true(
                shuttles["moon_clearance_complete"]
            )
            shuttles["price"] = _parse_money(shuttles["price"])
            return shuttles


        def create_model_input_table(
            shuttles: pd.DataFrame, companies: pd.DataFrame, reviews: pd.DataFrame
        ) -> pd.DataFrame:
            rated = shuttles.merge(reviews, left_on="id", right_on="shuttle_id")
            rated = rated.drop(columns="id")
            table = rated.merge(companies, left_on="company_id", right_on="id")
            return table.dropna().reset_index(drop=True)
        """,
    "src/spaceflights/pipelines/data_processing/pipeline.py": """
        from kedro.pipeline import Pipeline, node

        from .nodes import (
            create_model_input_table,
            preprocess_companies,
            preprocess_shuttles,
        )


        def create_pipeline(**kwargs) -> Pipeline:
            return Pipeline(
                [
                    node(preprocess_companies, "companies", "preprocessed_companies"),
                    node(preprocess_shuttles, "shuttles", "preprocessed_shuttles"),
                    node(
                        create_model_input_table,
                        ["preprocessed_shuttles", "preprocessed_companies", "reviews"],
                        "model_input_table",
                    ),
                ]
            )
        """,
    "src/spaceflights/pipelines/data_science/__init__.py": """
        from .pipeline import create_pipeline

        __all__ = ["create_pipeline"]
        """,
    "src/spaceflights/pipelines/data_science/nodes.py": """
        import pandas as pd
        from matplotlib.figure import Figure
        from sklearn.linear_model import LinearRegression
        from sklearn.metrics import max_error, mean_absolute_error, r2_score
        from sklearn.model_selection import train_test_split


        def split_data(data: pd.DataFrame, options: dict) -> tuple:
            return train_test_split(
                data[options["features"]].astype(float),
                data["price"],
                test_size=options["test_size"],
                random_state=options["random_state"],
            )


        def train_model(X_train: pd.DataFrame, y_train: pd.Series) -> LinearRegression:
            return LinearRegression().fit(X_train, y_train)


        def evaluate_model(
            regressor: LinearRegression, X_test: pd.DataFrame, y_test: pd.Series
        ) -> dict:
            predicted = regressor.predict(X_test)
            return {
                "r2_score": round(float(r2_score(y_test, predicted)), 9),
                "mae": round(float(mean_absolute_error(y_test, predicted)), 6),
                "max_error": round(float(max_error(y_test, predicted)), 6),
            }


        def plot_predictions(
            regressor: LinearRegression, X_test: pd.DataFrame, y_test: pd.Series
        ) -> Figure:
            figure = Figure(figsize=(4, 3), dpi=50)
            axes = figure.subplots()
            axes.scatter(y_test, regressor.predict(X_test), s=4)
            axes.set_xlabel("price")
            axes.set_ylabel("predicted")
            return figure
        """,
    "src/spaceflights/pipelines/data_science/pipeline.py": """
        from kedro.pipeline import Pipeline, node

        from .nodes import evaluate_model, plot_predictions, split_data, train_model


        def create_pipeline(**kwargs) -> Pipeline:
            return Pipeline(
                [
                    node(
                        split_data,
                        ["model_input_table", "params:model_options"],
                        ["X_train", "X_test", "y_train", "y_test"],
                    ),
                    node(train_model, ["X_train", "y_train"], "regressor"),
                    node(evaluate_model, ["regressor", "X_test", "y_test"], "metrics"),
                    node(
                        plot_predictions,
                        ["regressor", "X_test", "y_test"],
                        "prediction_plot",
                    ),
                ]
            )
        """,
    "conf/base/catalog.yml": """
        companies:
          type: pandas.CSVDataset
          filepath: data/01_raw/companies.csv
        shuttles:
          type: pandas.CSVDataset
          filepath: data/01_raw/shuttles.csv
        reviews:
          type: pandas.CSVDataset
          filepath: data/01_raw/reviews.csv
        preprocessed_companies:
          type: pandas.ParquetDataset
          filepath: data/02_intermediate/preprocessed_companies.parquet
        preprocessed_shuttles:
          type: pandas.ParquetDataset
          filepath: data/02_intermediate/preprocessed_shuttles.parquet
        model_input_table:
          type: pandas.ParquetDataset
          filepath: data/03_primary/model_input_table.parquet
        regressor:
          type: pickle.PickleDataset
          filepath: data/06_models/regressor.pickle
        metrics:
          type: json.JSONDataset
          filepath: data/08_reporting/metrics.json
        prediction_plot:
          type: matplotlib.MatplotlibDataset
          filepath: data/08_reporting/prediction_plot.png
          save_args:
            metadata: {Software: null}  # no library version in the file
        """,
    "conf/base/parameters.yml": """
        model_options:
          test_size: 0.2
          random_state: 3
          features:
            - engines
            - passenger_capacity
            - crew
            - d_check_complete
            - moon_clearance_complete
            - iata_approved
            - company_rating
            - review_scores_rating
        """,
}
SPACEFLIGHTS_OUTPUTS = {
    "02_intermediate/preprocessed_companies.parquet",
    "02_intermediate/preprocessed_shuttles.parquet",
    "03_primary/model_input_table.parquet",
    "06_models/regressor.pickle",
    "08_reporting/metrics.json",
    "08_reporting/prediction_plot.png",
}


def write_spaceflights_data(raw: Path, companies: int = 40, shuttles: int = 300):
    """Small companies, shuttles and reviews tables in spaceflights' raw formats
    ("t"/"f" flags, "90%" ratings, "$1,325.0" prices), from a fixed seed."""
    random = np.random.default_rng(7)
    raw.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "id": range(companies),
            "company_rating": [f"{r}%" for r in random.integers(50, 101, companies)],
            "iata_approved": random.choice(["t", "f"], companies),
        }
    ).to_csv(raw / "companies.csv", index=False)
    engines = random.integers(1, 5, shuttles)
    capacity = random.integers(2, 12, shuttles)
    price = 800 + 150 * engines + 60 * capacity + random.normal(0, 40, shuttles)
    pd.DataFrame(
        {
            "id": range(1000, 1000 + shuttles),
            "company_id": random.integers(0, companies, shuttles),
            "engines": engines,
            "passenger_capacity": capacity,
            "crew": random.integers(1, 6, shuttles),
            "d_check_complete": random.choice(["t", "f"], shuttles),
            "moon_clearance_complete": random.choice(["t", "f"], shuttles),
            "price": [f"${p:,.1f}" for p in price],
        }
    ).to_csv(raw / "shuttles.csv", index=False)
    pd.DataFrame(
        {
            "shuttle_id": range(1000, 1000 + shuttles),
            "review_scores_rating": random.integers(60, 101, shuttles).astype(float),
        }
    ).to_csv(raw / "reviews.csv", index=False)


def test_a_spaceflights_shaped_project_gives_the_same_files_on_dask(
    venv: Path, tmp_path: Path  # noqa: F811
):
    project = kedro_new(venv, tmp_path, "spaceflights")
    write(project, SPACEFLIGHTS)
    write_spaceflights_data(project / "data/01_raw")

    result = init(venv, project)
    assert result.returncode == 0, result.output
    assert "dask_client: wrote the commented block" in result.output
    sequential, dask = same_outputs_on_both_runners(venv, project, "spaceflights")

    assert set(sequential) == SPACEFLIGHTS_OUTPUTS
    assert dask == sequential  # same files, same bytes (pickles by value)
    assert sequential["08_reporting/prediction_plot.png"].startswith(b"\x89PNG")


def test_the_command_imports_without_dask(venv: Path, tmp_path: Path):  # noqa: F811
    """A project that lacks distributed still gets `kedro dask init`."""
    blocked = "import sys; sys.modules.update(distributed=None, dask=None); "
    result = run_command(
        [
            str(venv / "bin/python"),
            "-c",
            blocked + "import kedro_dask_starter.init_command",
        ],
        tmp_path,
    )

    assert result.returncode == 0, result.output
