"""The workloads of events and durable time (W4i, W8-W11), once each at tiny
sizes, for stackshift and the raw baseline, each in its own process as
``python -m bench`` runs it: every cell checks that each run it waited for ran
exactly once (an event resumed each waiter once, each sleeper woke once, one
run per cron tick), and the table shows what it measured."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from bench import report
from bench.cli import OWN, RUNS_ON, cells, run_cell
from tests.support.redis_server import RedisServer

SCALE = 0.001  # every size at its floor (20-50 runs)

# Tiny overrides of cells()'s sizes: a cell here takes a few seconds at most.
TINY: dict[str, dict[str, Any]] = {
    "W4i": {"n": 3, "seconds": 0},  # two runs of ten children, after a warm-up
    "W8": {"n": 10, "pace_ms": 2.0},
    "W9": {"n": 30, "min_s": 0.1, "max_s": 0.3},
    "W9hold": {"n": 30, "seconds": 0.5},
    "W10one": {"n": 20},
    "W10each": {"n": 20},
    "W11": {"seconds": 3},
}


@pytest.fixture
def bench_redis(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A private server: cells FLUSHALL it, which the shared one must never see."""
    return redis_server_factory("--appendonly", "no")


def _cells() -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (workload, column, system, params | TINY[column])
        for workload, column, params in cells(SCALE, {"W4i", "W8", "W9", "W10", "W11"})
        for system in sorted(OWN)
        if system in RUNS_ON[workload]
    ]


def _run(
    server: RedisServer, system: str, workload: str, params: dict[str, Any]
) -> dict[str, Any]:
    server.client().flushall()
    result = run_cell(
        sys.executable, OWN[system], server.url, {"workload": workload} | params
    )
    assert "error" not in result, result
    assert "skipped" not in result, result
    result.pop("versions", None)
    return result


@pytest.mark.parametrize(
    ("workload", "column", "system", "params"),
    [pytest.param(*cell, id=f"{cell[1]}-{cell[2]}") for cell in _cells()],
)
def test_each_workload_counts_every_run_once(
    workload: str,
    column: str,
    system: str,
    params: dict[str, Any],
    bench_redis: RedisServer,
) -> None:
    result = _run(bench_redis, system, workload, params)
    if column == "W11":
        # Every second of the window made exactly one run, whichever of the
        # three workers made it.
        assert result["ticks"] >= 2, result
        assert result["runs_per_tick_min"] == result["runs_per_tick_max"] == 1.0
        assert result["checked"] == result["ticks"]
    elif column == "W4i":
        assert result["checked"] == params["steps"] * (result["n"] + 1), result
    else:
        assert result["checked"] == params["n"], result
    if column == "W9hold":
        assert result["bytes_per_suspended"] > 0, result
        assert result["worker_cpu_ms_per_s"] >= 0, result
    elif column == "W8" and system == "raw":
        assert "floor_p50_ms" in result, result  # the one-hop floor, same cell
    record = {"system": system, "workload": workload, "column": column}
    records = [record | {"runs": [result]}]
    report.summarise(records)
    label = next(
        label for label, col, _ in report.EVENTS + report.TIME if col == column
    )
    table = report.table(records)
    assert label in table
    assert "failed" not in table


def test_systems_without_a_feature_are_skipped_not_failed(
    bench_redis: RedisServer,
) -> None:
    """raw-jobs has no W11 (cron is stackshift's alone): its cell says so."""
    bench_redis.client().flushall()
    result = run_cell(
        sys.executable,
        OWN["raw-jobs"],
        bench_redis.url,
        {"workload": "W11", "seconds": 1, "procs": 1},
    )
    assert "skipped" in result, result
    assert "error" not in result, result
