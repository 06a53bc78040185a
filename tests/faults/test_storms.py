"""Issue #3 item 5 (storms), item 6 (Redis full) and item 7 (startup checks)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis

from stackshift import Stackshift
from stackshift.errors import StoreError
from tests.support.redis_server import RedisServer

from .conftest import DURABLE
from .harness.checker import Expectations, check_ttls
from .harness.ledger import Ledger
from .harness.procs import Processes, read_acked, wait_for
from .harness.scenario import assert_invariants, quiesce, report_figures

SOAK_RUNS = int(os.environ.get("STACKSHIFT_SOAK_RUNS", "20000"))


@pytest.mark.timeout(120)
def test_200_concurrent_enqueues_of_one_key_make_one_run(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    """4 processes x 50 concurrent enqueues of one key, released together by a
    barrier file: one run, every caller gets its id, it runs once."""
    procs = procs_factory(durable_redis.url)
    acked = tmp_path / "acked.tsv"
    barrier = tmp_path / "go"
    payload = json.dumps({"steps": 3, "high": 10})
    enqueuers = [
        procs.enqueuer(
            acked,
            50,
            "--same-key",
            "storm-1",
            "--concurrency",
            "50",
            "--payload",
            payload,
            "--start-file",
            str(barrier),
        )  # fmt: skip
        for _ in range(4)
    ]
    barrier.touch()
    assert all(e.wait(60) == 0 for e in enqueuers)
    calls = read_acked(acked)
    assert len(calls) == 200
    expect = Expectations()
    expect.add_acked(calls)
    assert len(expect.runs) == 1, f"{len(expect.runs)} runs for one key"
    assert sum(1 for _k, _r, dedup in calls if not dedup) == 1
    procs.worker(lease=2.0)
    expect.counters["faults.n"] = 1
    client = durable_redis.client()
    quiesce(client, fault_prefix, expect, timeout=60)
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="enqueue_storm",
        callers=200,
        processes=4,
    )


def _sample(client: redis.Redis, stream: str, peak: dict[str, int]) -> None:
    used = int(client.info("memory")["used_memory"])
    peak["used_memory"] = max(peak.get("used_memory", 0), used)
    peak["keys"] = max(peak.get("keys", 0), client.dbsize())
    if client.exists(stream):
        peak["xlen"] = max(peak.get("xlen", 0), client.xlen(stream))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_keeps_memory_and_keys_bounded(
    redis_server_factory: Callable[..., RedisServer],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    tmp_path: Path,
) -> None:
    """STACKSHIFT_SOAK_RUNS runs (default 20000; 100,000 measured once, see
    docs/reliability.md) through one worker: the stream is trimmed by acks,
    run records expire, memory and key count return to their baseline."""
    server = redis_server_factory("--appendonly", "yes", "--appendfsync", "everysec")
    client = server.client()
    stream = f"{fault_prefix}{{faults}}:stream"
    base_memory = int(client.info("memory")["used_memory"])
    base_keys = client.dbsize()
    ttl = 5.0
    procs = procs_factory(server.url, FAULT_RESULT_TTL=str(ttl), FAULT_LEDGER="")
    worker = procs.worker(lease=5.0, concurrency=50)
    peak: dict[str, int] = {}
    began = time.monotonic()

    async def feed() -> list[str]:
        ids: list[str] = []
        async with Stackshift(server.url, prefix=fault_prefix) as app:
            q = app.queue("faults")
            for start in range(0, SOAK_RUNS, 1000):
                n = min(1000, SOAK_RUNS - start)
                ids += [h.run_id for h in await q.enqueue_many("quick", [{}] * n)]
                _sample(client, stream, peak)
                # keep the backlog bounded, like a steady producer would
                deadline = time.monotonic() + 120
                while client.xlen(stream) > 5000:
                    assert worker.alive, worker.text()[-2000:]
                    assert time.monotonic() < deadline, "the worker stopped draining"
                    await anyio.sleep(0.05)  # sync-ok: deadline-bounded poll
                    _sample(client, stream, peak)
        return ids

    ids = anyio.run(feed)
    expect = Expectations(check_steps=False)
    expect.runs = set(ids)

    def drained() -> bool:
        _sample(client, stream, peak)
        return client.hget(f"{fault_prefix}{{faults}}:stats", "completed") == str(
            SOAK_RUNS
        ).encode() and not client.xlen(stream)

    wait_for(drained, timeout=480, interval=0.2, message="the soak to drain")
    seconds = time.monotonic() - began
    assert worker.alive
    keys_after_drain = client.dbsize()
    assert not check_ttls(client, fault_prefix)
    # records expire after their retention; SCAN also triggers lazy expiry
    wait_for(
        lambda: sum(1 for _ in client.scan_iter(count=5000)) <= base_keys + 10,
        timeout=60,
        interval=0.5,
        message="the run records to expire",
    )
    keys_after = client.dbsize()
    memory_after = int(client.info("memory")["used_memory"])
    figures = {
        "runs": SOAK_RUNS,
        "seconds": round(seconds, 1),
        "runs_per_s": round(SOAK_RUNS / seconds),
        "baseline_used_memory": base_memory,
        "peak_used_memory": peak["used_memory"],
        "used_memory_after": memory_after,
        "keys_before": base_keys,
        "peak_keys": peak["keys"],
        "keys_after_drain": keys_after_drain,
        "keys_after_ttl": keys_after,
        "peak_xlen": peak.get("xlen", 0),
        "xlen_after": client.xlen(stream),
        "stats": {
            k.decode(): int(v)
            for k, v in client.hgetall(f"{fault_prefix}{{faults}}:stats").items()
        },
    }
    report_figures("soak", figures)
    assert client.xlen(stream) == 0
    assert keys_after <= base_keys + 10, figures
    assert memory_after < base_memory + 4 * 1024 * 1024, figures


def test_redis_full_refuses_enqueue_cleanly_then_carries_on(
    redis_server_factory: Callable[..., RedisServer],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
) -> None:
    """maxmemory reached under noeviction: enqueue raises a clear StoreError
    and writes nothing (no run without entry, no key without run); once
    memory is freed, enqueues and runs carry on."""
    server = redis_server_factory(
        *DURABLE, "--maxmemory", "8mb", "--maxmemory-policy", "noeviction"
    )
    client = server.client()
    filler = f"{fault_prefix}filler"
    # most of the headroom goes to a key the test frees later
    limit = 8 * 1024 * 1024
    while int(client.info("memory")["used_memory"]) < limit - 2048 * 1024:
        client.append(filler, b"x" * 128 * 1024)
    accepted: list[str] = []
    refusal: list[str] = []

    async def fill() -> None:
        async with Stackshift(server.url, prefix=fault_prefix) as app:
            q = app.queue("faults")
            for i in range(2000):
                try:
                    h = await q.enqueue(
                        "multistep",
                        {"steps": 3, "pad": "p" * 8000},
                        idempotency_key=f"k{i}",
                    )
                except StoreError as exc:
                    refusal.append(str(exc))
                    if len(refusal) >= 3:
                        return
                    continue
                accepted.append(h.run_id)

    anyio.run(fill)
    assert refusal, "Redis never filled up"
    assert accepted, "Redis was full before the first enqueue"
    assert "maxmemory" in refusal[0], refusal[0]
    q = f"{fault_prefix}{{faults}}:"
    runs = list(client.keys(q + "run:*"))
    idem = list(client.keys(q + "idem:*"))
    assert len(runs) == len(accepted) == client.xlen(q + "stream") == len(idem), (
        "a refused enqueue left part of its state behind"
    )
    client.delete(filler)  # memory frees up

    async def more() -> list[str]:
        async with Stackshift(server.url, prefix=fault_prefix) as app:
            q = app.queue("faults")
            return [
                (await q.enqueue("multistep", {"steps": 3})).run_id for _ in range(5)
            ]

    later = anyio.run(more)
    procs = procs_factory(server.url)
    procs.worker(lease=2.0, concurrency=4)
    expect = Expectations()
    expect.runs = set(accepted + later)
    expect.counters["faults.n"] = len(expect.runs)
    quiesce(client, fault_prefix, expect, timeout=90)
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="redis_full",
        accepted_before_full=len(accepted),
        refused=len(refusal),
        accepted_after_free=len(later),
    )


def test_out_of_memory_refusal_says_so(
    redis_server_factory: Callable[..., RedisServer], fault_prefix: str
) -> None:
    server = redis_server_factory("--maxmemory-policy", "noeviction")
    server.client().config_set("maxmemory", 1)  # already over the limit

    async def go() -> None:
        async with Stackshift(server.url, prefix=fault_prefix) as app:
            with pytest.raises(StoreError, match="out of memory.*nothing was written"):
                await app.queue("faults").enqueue("multistep", {})

    anyio.run(go)


@pytest.mark.parametrize(
    ("args", "event", "level"),
    [
        (
            ("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"),
            "redis_eviction_policy",
            "critical",
        ),
        (
            ("--appendonly", "yes", "--maxmemory-policy", "volatile-lru"),
            "redis_eviction_policy",
            "critical",
        ),
        (("--appendonly", "no"), "redis_without_aof", "warning"),
    ],
    ids=["allkeys-lru", "volatile-lru", "no-persistence"],
)
def test_worker_warns_loudly_about_unsafe_redis(
    redis_server_factory: Callable[..., RedisServer],
    procs_factory: Callable[..., Processes],
    args: tuple[str, ...],
    event: str,
    level: str,
) -> None:
    server = redis_server_factory(*args)
    procs = procs_factory(server.url)
    worker = procs.worker()
    wait_for(lambda: worker.events("worker_started"), timeout=30, message="the worker")
    lines = worker.events(event)
    assert lines, f"no {event} line in:\n{worker.text()}"
    assert lines[0]["level"] == level
    assert worker.alive  # a warning, not a refusal


def test_safe_redis_gets_no_warning(
    durable_redis: RedisServer, procs_factory: Callable[..., Processes]
) -> None:
    procs = procs_factory(durable_redis.url)
    worker = procs.worker()
    wait_for(lambda: worker.events("worker_started"), timeout=30, message="the worker")
    noisy = [
        line for line in worker.lines() if line.get("level") in ("warning", "critical")
    ]
    assert not noisy, noisy
