"""``python -m bench``: every workload, for stackshift, the raw baselines and the
peers, each cell ``--repeat`` times in a fresh process, against a private
redis-server; prints a table and writes JSON to bench/results/."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import report
from bench.server import BenchRedis
from bench.venvs import PEERS, ensure_venv

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
OWN = {
    "stackshift": "bench.systems.stackshift_system",
    # metrics on (Worker(metrics_port=...)), for their cost: not run by default
    "stackshift-metrics": "bench.systems.stackshift_metrics",
    "raw": "bench.systems.raw",
    "raw-jobs": "bench.systems.raw_jobs",
}
ALL_WORKLOADS = (
    "W1", "W1b", "W2", "W3", "W4", "W5", "W6", "W7",
    "W4i", "W8", "W9", "W10", "W11", "W12",
)  # fmt: skip
# Workloads only some systems can run (the rest: every system). The peers have
# no events, child runs or suspended runs; their chained jobs are W4's (W4i
# stands beside it), their delayed jobs are W9's (taskiq-redis has none: its
# scheduler is a separate process reading a schedule source). W11 is
# stackshift's alone: exactly one run per tick across workers.
RUNS_ON = {
    "W4i": {"stackshift", "raw"},
    "W8": {"stackshift", "raw"},
    "W9": {"stackshift", "raw", "arq", "saq", "streaq"},
    "W10": {"stackshift", "raw"},
    "W11": {"stackshift"},
}
# The peers' lightest set-ups (``<peer>-light``: results not kept) change what
# a run costs to finish, so they run the drains and W12 only.
LIGHT_RUNS = {"W2", "W5", "W6", "W12"}
CELL_TIMEOUT = 900.0


def cells(
    scale: float, only: set[str], *, aof: bool = True
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(workload, column, params) of every cell, sizes scaled. ``aof``: W12's
    measured server keeps an AOF (appendfsync everysec)."""

    def n(full: int, least: int = 100) -> int:
        return max(least, int(full * scale))

    if "W1" in only:
        yield "W1", "W1", {"n": n(20_000)}
    if "W1b" in only:
        yield "W1b", "W1b", {"n": n(20_000)}
    if "W2" in only:
        yield "W2", "W2", {"n": n(20_000)}
        yield "W2", "W2@100", {"n": n(20_000), "concurrency": 100}
    if "W3" in only:
        yield "W3", "W3", {"n": n(1_000, 50), "pace_ms": 2.0}
    if "W4" in only:
        yield "W4", "W4", {"n": n(200, 3), "steps": 10, "seconds": max(3, 20 * scale)}
    if "W5" in only:
        yield from _w5_cells(n(20_000))
    if "W6" in only:
        measured = n(2_000, 50)
        for label, backlog in (("deep", n(200_000)), ("shallow", n(2_000, 50))):
            params = {"backlog": max(backlog, measured), "measured": measured}
            yield "W6", f"W6{label}", params | {"concurrency": 100}
    if "W7" in only:
        yield "W7", "W7", {"n": n(10_000)}
    if "W12" in only:
        # Per-run costs settle long before 10,000 runs (fixed costs: a few
        # connections and script loads); arq drains ~200 jobs/s at c=10.
        yield "W12", "W12", {"n": n(10_000), "aof": aof}
        yield "W12", "W12@100", {"n": n(10_000), "concurrency": 100, "aof": aof}
    yield from _durable_cells(scale, only)


def _w5_cells(n: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """W5: 1, 2 and 4 worker processes started one by one, then 2 and 4 under
    the system's own supervisor (``stackshift worker --processes N``)."""
    for procs in (1, 2, 4):
        yield "W5", f"W5x{procs}", {"n": n, "concurrency": 100, "procs": procs}
    for procs in (2, 4):
        params = {"n": n, "concurrency": 100, "procs": procs, "supervised": True}
        yield "W5", f"W5s{procs}", params


def _durable_cells(
    scale: float, only: set[str]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Cells of events and durable time (issue #11)."""

    def n(full: int, least: int) -> int:
        return max(least, int(full * scale))

    if "W4i" in only:
        params = {"n": n(200, 3), "steps": 10, "seconds": max(3, 20 * scale)}
        yield "W4i", "W4i", params | {"invoke": True}
    if "W8" in only:
        yield "W8", "W8", {"n": n(1_000, 20), "pace_ms": 5.0}
    if "W9" in only:
        sleepers = {"n": n(10_000, 50), "concurrency": 100}
        yield "W9", "W9", sleepers | {"min_s": 1.0, "max_s": 5.0}
        yield "W9", "W9hold", sleepers | {"phase": "hold", "seconds": max(1, 5 * scale)}
    if "W10" in only:
        # stackshift's default concurrency for every system (raw's is 100)
        fan_out = {"n": n(1_000, 20), "concurrency": 10}
        yield "W10", "W10one", fan_out | {"events": "one"}
        yield "W10", "W10each", fan_out | {"events": "each"}
    if "W11" in only:
        yield "W11", "W11", {"seconds": max(5, 60 * scale), "procs": 3}


def runs_on(system: str, workload: str) -> bool:
    """Whether ``system`` runs ``workload`` (the rest print ``skipped`` or are
    left out)."""
    if system.endswith("-light") and workload not in LIGHT_RUNS:
        return False
    return workload not in RUNS_ON or system in RUNS_ON[workload]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size (0.1: quick)"
    )
    parser.add_argument(
        "--only", default=",".join(ALL_WORKLOADS), help="workloads, e.g. W1,W8,W9"
    )
    parser.add_argument(
        "--peers", default="all", help="none, all, or a list: " + ",".join(PEERS)
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each cell")
    parser.add_argument(
        "--systems",
        default="stackshift,raw,raw-jobs",
        help="own systems: " + ",".join(OWN),
    )
    parser.add_argument(
        "--no-aof",
        action="store_true",
        help="W12's measured Redis without an AOF (default: appendfsync everysec)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--redis-server", default="redis-server", help="the redis-server binary"
    )
    return parser.parse_args(argv)


def _peers(spec: str) -> list[str]:
    if spec == "none":
        return []
    if spec == "all":
        return list(PEERS)
    chosen = [p.strip() for p in spec.split(",") if p.strip()]
    unknown = set(chosen) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peers: {', '.join(sorted(unknown))}")
    return chosen


def run_cell(
    python: str, module: str, url: str, params: dict[str, Any]
) -> dict[str, Any]:
    """One cell in a fresh process; its last stdout line is its JSON."""
    env = dict(os.environ, BENCH_REDIS_URL=url, PYTHONPATH=str(REPO))
    try:
        proc = subprocess.run(
            [python, "-m", module, "cell", json.dumps(params)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=CELL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CELL_TIMEOUT:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def machine(server: BenchRedis) -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
    return {
        "nproc": os.cpu_count(),
        "lscpu": lscpu.stdout.splitlines()[:12],
        "redis": server.version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if only - set(ALL_WORKLOADS):
        raise SystemExit(f"unknown workloads: {sorted(only - set(ALL_WORKLOADS))}")
    systems: dict[str, tuple[str, str]] = {
        name: (sys.executable, OWN[name])
        for name in (s.strip() for s in args.systems.split(","))
        if name
    }
    for peer in _peers(args.peers):
        python = ensure_venv(peer)
        print(f"venv for {peer}: {python.parents[1]}", file=sys.stderr)
        systems[peer] = (str(python), PEERS[peer].module)
    plan = list(cells(args.scale, only, aof=not args.no_aof))
    started = dt.datetime.now(dt.UTC)
    records: list[dict[str, Any]] = []
    with BenchRedis(args.redis_server) as server:
        doc: dict[str, Any] = {
            "started": started.isoformat(),
            "command": "python -m bench "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "scale": args.scale,
            "repeat": args.repeat,
            "machine": machine(server),
            "versions": {},
            "cells": records,
        }
        for workload, column, params in plan:
            ran = {
                name: how for name, how in systems.items() if runs_on(name, workload)
            }
            cell_records = [
                {
                    "system": system,
                    "workload": workload,
                    "column": column,
                    "params": params,
                    "runs": [],
                }
                for system in ran
            ]
            records.extend(cell_records)
            # Repetitions interleave the systems, so drift hits all of them alike.
            for rep in range(args.repeat):
                for record, (system, (python, module)) in zip(
                    cell_records, ran.items(), strict=True
                ):
                    server.flushall()
                    began = time.monotonic()
                    result = run_cell(
                        python, module, server.url, {"workload": workload} | params
                    )
                    versions = result.pop("versions", None)
                    if versions:
                        doc["versions"][system] = versions
                    record["runs"].append(result)
                    took = time.monotonic() - began
                    shown = (
                        result.get("error")
                        or result.get("skipped")
                        or report.headline(workload, result)
                    )
                    print(
                        f"[{column} {system} {rep + 1}/{args.repeat}] {shown} ({took:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
        doc["finished"] = dt.datetime.now(dt.UTC).isoformat()
    report.summarise(records)
    table = report.table(records)
    print(table)
    doc["table"] = table
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    for path in (args.out / f"{stamp}.json", args.out / "latest.json"):
        path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out / f'{stamp}.json'} and latest.json", file=sys.stderr)
    failed = [r for r in records for run in r["runs"] if "error" in run]
    return 1 if failed else 0
