"""``python -m bench.cluster`` once at a tiny size, on its own private servers
(a standalone one and a 3-master cluster): every scenario runs exactly N runs,
each master holds the runs of the slots it owns, and each run's outcome is
published over the cluster bus to the masters that do not hold it (the
``b`` of docs/scaling.md's model). Also the W2 targets line of the report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

REPO = Path(__file__).resolve().parents[2]
N = 120  # divisible by the three queues' round robin


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")
def test_cluster_scenarios_place_every_run_on_its_master(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--n", str(N), "--repeat", "1",
         "--concurrency", "10", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(next(tmp_path.glob("*-cluster.json")).read_text())
    results = {r["name"]: r["runs"][0] for r in doc["results"]}
    for name, run in results.items():
        assert "error" not in run, (name, run)
        assert run["checked"] == N, (name, run)
        assert sum(node["runs"] for node in run["nodes"]) == N, (name, run)

    one = results["cluster 1 queue"]["nodes"]
    held = [node["runs"] for node in one]
    assert sorted(held) == [0, 0, N], held
    for node in one:
        # A run's end is published on its shard (SPUBLISH): no master hears of
        # the runs of another over the cluster bus.
        assert node["bus_publish_received"] == 0, one

    for name in ("cluster 3 queues", "cluster 1 queue x3 partitions"):
        spread = [node["runs"] for node in results[name]["nodes"]]
        assert spread == [N // 3] * 3, (name, spread)
    assert "| standalone |" in doc["table"]


def test_the_targets_line_names_the_fastest_peer_of_each_set_up() -> None:
    def cell(system: str, column: str, rate: float) -> dict[str, object]:
        return {
            "system": system,
            "column": column,
            "workload": "W2",
            "runs": [{"jobs_per_s": rate}],
        }

    records = [
        cell("stackshift", "W2", 4000.0),
        cell("raw-jobs", "W2", 8000.0),
        cell("saq", "W2", 1000.0),
        cell("taskiq", "W2", 1500.0),
        cell("taskiq-light", "W2", 2500.0),
        cell("saq-light", "W2", 900.0),
    ]
    report.summarise(records)
    line = report.targets(records)
    assert "0.50× raw-jobs" in line
    assert "2.67× taskiq (1,500)" in line
    assert "1.60× taskiq-light (2,500)" in line
