"""The benchmark suite, once, at tiny sizes: stackshift and the raw baselines
(no peers), each workload in its own process as ``python -m bench`` runs it,
so the suite cannot rot. Each cell checks that exactly N jobs ran."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from bench import report
from bench.cli import OWN, cells, run_cell
from tests.support.redis_server import RedisServer

SCALE = 0.005  # 100 jobs where the suite runs 20,000


@pytest.fixture
def bench_redis(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A private server: cells FLUSHALL it, which the shared one must never see."""
    return redis_server_factory("--appendonly", "no")


def _expected(workload: str, params: dict[str, Any], result: dict[str, Any]) -> int:
    if workload == "W4":
        return params["steps"] * (result["n"] + 1)  # the runs plus one warm-up
    if workload == "W6":
        return params["measured"]
    return int(params["n"])


@pytest.mark.parametrize("system", sorted(OWN))
def test_every_workload_runs_exactly_n_jobs(
    system: str, bench_redis: RedisServer
) -> None:
    records = []
    for workload, column, params in cells(
        SCALE, {"W1", "W1b", "W2", "W3", "W4", "W5", "W6", "W7"}
    ):
        if workload == "W4":
            params = params | {"n": 3, "seconds": 0}  # two runs, after a warm-up
        if workload == "W5" and params["procs"] == 4:
            continue  # 1 and 2 processes prove the multi-process path
        bench_redis.client().flushall()
        result = run_cell(
            sys.executable,
            OWN[system],
            bench_redis.url,
            {"workload": workload} | params,
        )
        assert "error" not in result, (column, result)
        if "skipped" in result:  # W5s: a system without a supervisor
            assert column.startswith("W5s") and system != "stackshift", result
            continue
        if workload == "W6":
            assert result["checked"] >= _expected(workload, params, result), (
                column,
                result,
            )
        else:
            assert result["checked"] == _expected(workload, params, result), (
                column,
                result,
            )
        records.append(
            {"system": system, "workload": workload, "column": column, "runs": [result]}
        )
    report.summarise(records)
    table = report.table(records)
    assert system in table
    assert "failed" not in table
