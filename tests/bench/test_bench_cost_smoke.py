"""W12 (what a completed run costs Redis) once at a tiny size, for stackshift
and the raw baselines, each in its own process as ``python -m bench`` runs it:
the measured server must see the system's commands and nothing else (the
jobs' own work goes to the bench's server), and the table must show them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from bench import report
from bench.cli import OWN, cells, run_cell, runs_on
from tests.support.redis_server import RedisServer

SCALE = 0.001  # 100 runs, the floor


@pytest.fixture
def bench_redis(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A private server: cells FLUSHALL it, which the shared one must never see."""
    return redis_server_factory("--appendonly", "no")


def _run(server: RedisServer, system: str, params: dict[str, Any]) -> dict[str, Any]:
    server.client().flushall()
    result = run_cell(sys.executable, OWN[system], server.url, params)
    assert "error" not in result, result
    result.pop("versions", None)
    return result


@pytest.mark.parametrize("system", sorted(OWN))
def test_w12_counts_the_systems_commands_per_run(
    system: str, bench_redis: RedisServer
) -> None:
    records = []
    for workload, column, params in cells(SCALE, {"W12"}):
        result = _run(bench_redis, system, {"workload": workload} | params)
        n = params["n"]
        assert result["checked"] == n, result
        commands = result["commands"]
        # The jobs' INCRBY/GET went to the bench's server, not the measured one.
        assert "incrby" not in commands and "get" not in commands, commands
        # Every run was enqueued by an awaited call of its own.
        if system.startswith("stackshift"):  # stackshift, stackshift-metrics
            assert result["enqueue_scripts_per_run"] >= 1.0, result
            assert commands["xadd"] == 1.0, commands  # inside enqueue.lua
        else:
            assert commands["xadd"] == 1.0, commands
            assert result["enqueue_calls_per_run"] < 1.1, result
        assert result["redis_cpu_us_per_run"] > 0, result
        assert result["aof_bytes_per_run"] > 0, result  # the AOF is on
        assert result["bytes_in_per_run"] > 0, result
        assert result["reads_per_run"] >= 1.0, result  # one round trip per enqueue
        records.append(
            {"system": system, "workload": workload, "column": column, "runs": [result]}
        )
    report.summarise(records)
    table = report.table(records)
    assert "W12 Redis µs/run" in table and "W12@100 Redis µs/run" in table
    assert f"- {system}: " in table  # the commands by name
    assert "failed" not in table


def test_w12_without_an_aof_writes_no_aof_bytes(bench_redis: RedisServer) -> None:
    column, params = next(
        (column, params)
        for _, column, params in cells(SCALE, {"W12"}, aof=False)
        if column == "W12"
    )
    result = _run(bench_redis, "raw", {"workload": "W12"} | params)
    assert result["aof"] is False
    assert result["aof_bytes_per_run"] == 0, result
    assert result["checked"] == params["n"], result


def test_lightest_peer_set_ups_run_only_the_drains_and_w12() -> None:
    assert runs_on("saq-light", "W2") and runs_on("taskiq-light", "W12")
    assert not runs_on("saq-light", "W1") and not runs_on("arq-light", "W9")
    assert runs_on("arq", "W9") and not runs_on("taskiq", "W9")
    assert runs_on("stackshift", "W11") and not runs_on("raw", "W11")
