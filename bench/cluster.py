"""W12 on a Redis Cluster: what stackshift's runs cost each master.

    .venv/bin/python -m bench.cluster [--n 6000] [--concurrency 100] [--repeat 3]

docs/scaling.md models how runs/s grow with masters and partitions from W12's
cost per run on one server; this checks the model on real processes. One
private standalone server and one private cluster of ``--masters`` masters (no
replicas), every node with W12's AOF (appendfsync everysec); the jobs' own work
and the marks on a third server. Each scenario, in a fresh process:

- ``standalone``: one queue on the standalone server (W12's set-up);
- ``cluster 1 queue``: one queue, so one slot, so one master;
- ``cluster 3 queues``: a queue on each master (names picked by their slot);
- ``cluster 1 queue x3 partitions``: one queue, ``partitions=3``.

N runs are enqueued one at a time, awaited (round robin over the scenario's
queues), then drained by one worker process serving them all. Every master's
``INFO`` (commands, CPU) and ``CLUSTER INFO`` (bus messages) are read before and
after, so each master's share shows: the runs it holds, its CPU per run, and what
it pays for the others' runs (a ``PUBLISH`` is sent to every node of a cluster).
Two cores run all of it, so the cluster cannot show three masters' throughput
here; the per-master costs are what the model needs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog

from bench.server import BenchCluster, BenchRedis
from bench.systems.stackshift_system import StackshiftAdapter
from bench.workloads import common, cost, driver

REPO = Path(__file__).resolve().parents[1]
PREFIX = "ssb:"  # bench/apps/stackshift_app.py


class Serving(StackshiftAdapter):
    """stackshift's bench worker, serving the scenario's queues."""

    def __init__(self, queues: list[str]) -> None:
        super().__init__()
        self._queues = queues

    def worker_argv(self, concurrency: int, mode: str = "") -> list[str]:
        argv = [sys.executable, "-m", "stackshift", "worker"]
        argv += ["bench.apps.stackshift_app:app", "--log-level", "warning"]
        for queue in self._queues:
            argv += ["--queue", queue]
        return [*argv, "--concurrency", str(concurrency)]


# --- one scenario (a process of its own) ------------------------------------------


async def bus_published(client: Any) -> int:
    """Pub/sub messages this node received over the cluster bus so far."""
    raw = await client.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    for line in text.splitlines():
        if line.startswith("cluster_stats_messages_publish_received:"):
            return int(line.split(":", 1)[1])
    return 0


async def scenario(p: dict[str, Any]) -> dict[str, Any]:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    from bench.apps.stackshift_app import app  # reads $BENCH_REDIS_URL

    n, queues, partitions = int(p["n"]), list(p["queues"]), int(p["partitions"])
    masters = [aioredis.Redis(port=port) for port in p["ports"]]
    marks = aioredis.Redis.from_url(common.work_url())
    handles = [app.queue(q, partitions=partitions or None) for q in queues]
    try:
        before = [await cost.snapshot(m) for m in masters]
        bus0 = [await bus_published(m) for m in masters] if p["cluster"] else []
        for i in range(n):
            await handles[i % len(handles)].enqueue("noop", {"t": 0.0})
        enqueued = [await cost.snapshot(m) for m in masters]
        await driver.set_target(marks, n)
        with driver.Workers(Serving(queues), int(p["concurrency"])) as workers:
            end = await driver.wait_end(marks, workers, max(120.0, n / 50))
            first = float(await marks.get(common.FIRST))
            await asyncio.sleep(cost.SETTLE_SECONDS)
            drained = [await cost.snapshot(m) for m in masters]
            bus1 = [await bus_published(m) for m in masters] if p["cluster"] else []
        done = await driver.check_done(marks, n)
        held = [await _completed(m, p["stored"]) for m in masters]
    finally:
        await app.close()
        await common.close_client()
        await marks.aclose()
        for m in masters:
            await m.aclose()
    nodes = []
    for i in range(len(masters)):
        enq = cost.delta(before[i], enqueued[i], n)
        drain = cost.delta(enqueued[i], drained[i], n)
        nodes.append(
            {
                "runs": held[i],
                "redis_cpu_us_per_run": enq["redis_cpu_us_per_run"]
                + drain["redis_cpu_us_per_run"],
                "enqueue_redis_cpu_us_per_run": enq["redis_cpu_us_per_run"],
                "drain_redis_cpu_us_per_run": drain["redis_cpu_us_per_run"],
                "calls_per_run": enq["calls_per_run"] + drain["calls_per_run"],
                "aof_bytes_per_run": enq["aof_bytes_per_run"]
                + drain["aof_bytes_per_run"],
                "bus_publish_received": bus1[i] - bus0[i] if bus1 else 0,
                "commands": drain["commands"],
            }
        )
    return {
        "jobs_per_s": (n - 1) / max(end - first, 1e-9),
        "n": n,
        "checked": done,
        "nodes": nodes,
    }


async def _completed(master: Any, stored: list[str]) -> int:
    """Runs completed in the queues (or partitions) this master holds: a
    queue's stats hash lives in its slot, so another master has none of it."""
    total = 0
    for queue in stored:
        try:
            value = await master.hget(f"{PREFIX}{{{queue}}}:stats", "completed")
        except aioredis.ResponseError:  # MOVED: another master's slot
            continue
        total += int(value or 0)
    return total


# --- the run: servers, scenarios, table ----------------------------------------------


def _queues_on_each_master(cluster: BenchCluster) -> list[str]:
    """One queue name per master, picked by the slot its keys hash to."""
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"q{i}"
        found.setdefault(cluster.master_of(f"{PREFIX}{{{name}}}:stream"), name)
        if len(found) == len(cluster.nodes):
            return [found[m] for m in sorted(found)]
    raise RuntimeError("no queue name found for some master")


def _scenarios(cluster: BenchCluster, args: argparse.Namespace) -> list[dict[str, Any]]:
    each = _queues_on_each_master(cluster)
    parts = [f"bench:{i}" for i in range(args.masters)]
    return [
        {"name": "standalone", "cluster": False, "queues": ["bench"], "partitions": 0},
        {"name": "cluster 1 queue", "cluster": True, "queues": ["bench"], "partitions": 0},
        {"name": f"cluster {len(each)} queues", "cluster": True, "queues": each,
         "partitions": 0},
        {"name": f"cluster 1 queue x{args.masters} partitions", "cluster": True,
         "queues": ["bench"], "partitions": args.masters, "stored": parts},
    ]  # fmt: skip


def _run_scenario(
    spec: dict[str, Any], url: str, ports: list[int], work_url: str, n: int, c: int
) -> dict[str, Any]:
    params = spec | {"n": n, "concurrency": c, "ports": ports}
    params.setdefault("stored", spec["queues"])
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        **{common.URL_ENV: url, common.WORK_URL_ENV: work_url},
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "scenario", json.dumps(params)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _median(runs: list[dict[str, Any]], get: Any) -> float:
    return statistics.median(float(get(run)) for run in runs)


def table(results: list[dict[str, Any]]) -> str:
    """Per scenario: the drain's rate and, per master, the share of runs and
    the Redis CPU per run of the whole scenario (medians of the repetitions)."""
    lines = [
        "| scenario | runs/s (1 worker) | Redis µs/run, all masters | per master: "
        "runs held, CPU µs per scenario run | bus PUBLISH received per run |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        runs = [r for r in result["runs"] if "error" not in r]
        if not runs:
            lines.append(f"| {result['name']} | failed | | | |")
            continue
        masters = len(runs[0]["nodes"])
        total = _median(
            runs, lambda r: sum(x["redis_cpu_us_per_run"] for x in r["nodes"])
        )
        per = []
        bus = []
        for i in range(masters):
            held = _median(runs, lambda r, i=i: r["nodes"][i]["runs"] / r["n"])
            us = _median(runs, lambda r, i=i: r["nodes"][i]["redis_cpu_us_per_run"])
            per.append(f"{held:.0%} {us:.1f}")
            bus.append(
                f"{_median(runs, lambda r, i=i: r['nodes'][i]['bus_publish_received'] / r['n']):.2f}"
            )
        rate = _median(runs, lambda r: r["jobs_per_s"])
        lines.append(
            f"| {result['name']} | {rate:,.0f} | {total:.1f} | "
            f"{' / '.join(per)} | {' / '.join(bus)} |"
        )
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:2] == ["scenario"]:
        print(json.dumps(asyncio.run(scenario(json.loads(sys.argv[2])))), flush=True)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=__doc__
    )
    parser.add_argument("--n", type=int, default=6000, help="runs per scenario")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    with (
        BenchRedis() as work,
        BenchRedis(args=cost.AOF_ARGS) as single,
        BenchCluster(args.masters, args=cost.AOF_ARGS) as cluster,
    ):
        specs = _scenarios(cluster, args)
        results = [{"name": s["name"], "spec": s, "runs": []} for s in specs]
        for rep in range(args.repeat):  # interleaved, so drift hits all alike
            for spec, result in zip(specs, results, strict=True):
                work.flushall()
                single.flushall()
                cluster.flushall()
                if spec["cluster"]:
                    url, ports = cluster.url, [node.port for node in cluster.nodes]
                else:
                    url, ports = single.url, [single.port]
                began = time.monotonic()
                run = _run_scenario(
                    spec, url, ports, work.url, args.n, args.concurrency
                )
                result["runs"].append(run)
                shown = run.get("error") or f"{run['jobs_per_s']:,.0f} runs/s"
                print(
                    f"[{spec['name']} {rep + 1}/{args.repeat}] {shown} "
                    f"({time.monotonic() - began:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    text = table(results)
    print(text)
    doc = {
        "started": started.isoformat(),
        "command": "python -m bench.cluster " + " ".join(sys.argv[1:]),
        "machine": {"nproc": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "results": results,
        "table": text,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}-cluster.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
