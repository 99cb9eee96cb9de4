"""The benchmark suite (benchmarks/run_benchmarks.py) runs end to end at tiny
sizes, one run per configuration, so that it never rots. Timings are not checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.report import PIPELINE_RUNNERS, PIPELINE_TITLES, RUNNER_LABELS

from .conftest import ROOT, run_command

TINY = [
    "--repeat=1",
    "--warmup=0",
    "--a-nodes=20",
    "--dask-a-nodes=30",
    "--parallel-a-nodes=20",
    "--b-iterations=1000",
    "--c-megabytes=1",
    "--e-megabytes=8",
    "--d-env=test",
]


def test_the_suite_measures_every_runner_on_every_pipeline(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    result = run_command(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run_benchmarks.py"),
            *TINY,
            f"--output-dir={tmp_path}",
            f"--doc={doc}",
        ],
        ROOT,
        timeout=240,
    )
    assert result.returncode == 0, result.output

    tables = (tmp_path / "results.md").read_text()
    sections = {
        title: tables.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]
        for title in PIPELINE_TITLES.values()
        if f"### {title}\n" in tables
    }
    assert set(sections) == set(PIPELINE_TITLES.values()), tables
    for pipeline, title in PIPELINE_TITLES.items():
        for runner in PIPELINE_RUNNERS[pipeline]:
            assert f"| {RUNNER_LABELS[runner]} |" in sections[title], (runner, title)

    results = json.loads((tmp_path / "results.json").read_text())["results"]
    measured = {(r["runner"], r["pipeline"]) for r in results}
    assert len(measured) == sum(map(len, PIPELINE_RUNNERS.values()))
    assert all(len(r["times"]) == 1 for r in results)
    assert all(r["peak_added_mb"] for r in results if r["pipeline"] in ("C", "E"))
    on_dask = [r for r in results if r["pipeline"] == "A" and r["size"] == 30]
    assert {r["runner"] for r in on_dask} == {"dask", "distributed"}
    for row in on_dask:
        (timeline,) = row["timelines"]
        assert 0 < timeline["graph_at_scheduler"] <= timeline["first_node_started"]
        assert timeline["first_node_started"] < row["times"][0]
        assert row["driver_peak_mb"][0] > 50
    assert "| Driver peak RSS (MiB) |" in sections[PIPELINE_TITLES["A"]]

    page = doc.read_text()
    for heading in ("## Machine", "## Method", "## Results", "### Targets"):
        assert heading in page
    assert "run_benchmarks.py" in page  # the command that produced it

    # The page can be written again from the results, without measuring.
    again = run_command(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run_benchmarks.py"),
            f"--from-json={tmp_path / 'results.json'}",
            f"--output-dir={tmp_path / 'again'}",
            f"--doc={tmp_path / 'again.md'}",
        ],
        ROOT,
        timeout=60,
    )
    assert again.returncode == 0, again.output
    assert (tmp_path / "again.md").read_text() == page
