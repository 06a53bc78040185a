"""Issue #3 item 2: Redis killed (-9) and restarted under load; AOF tails cut
at random offsets; a Redis that restarts empty."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.support.redis_server import RedisServer

from .harness.apps import COUNTER
from .harness.chaos import Chaos
from .harness.checker import Expectations
from .harness.ledger import Event, Ledger
from .harness.procs import Processes, read_acked, wait_for
from .harness.scenario import assert_invariants, quiesce, report_figures

LEASE = 1.5


def _load_with_restarts(
    server: RedisServer,
    procs: Processes,
    ledger: Ledger,
    tmp_path: Path,
    chaos: Chaos,
    restarts: int,
    kills: list[int] | None = None,
) -> tuple[Expectations, list[float]]:
    """2 workers and 2 enqueuers (idempotency keys, retried until acknowledged);
    Redis is killed -9 and restarted ``restarts`` times at random moments (their
    ``time.monotonic_ns()``, the ledger's clock, appended to ``kills``)."""
    workers = [procs.worker(lease=LEASE, concurrency=4) for _ in range(2)]
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 4, "low": 10, "high": 100})
    enqueuers = [
        procs.enqueuer(acked, 120, "--payload", payload, "--pace-ms", "15")
        for _ in range(2)
    ]
    downtimes = []
    for _ in range(restarts):
        wait_for(lambda: ledger.count("start") > 0, timeout=30, message="load")
        time.sleep(chaos.uniform(0.3, 1.2))  # chaos: the moment of the kill
        began = time.monotonic()
        if kills is not None:
            kills.append(time.monotonic_ns())
        server.kill()
        time.sleep(chaos.uniform(0.5, 2.0))  # the outage itself
        server.start()  # same port, same data directory
        downtimes.append(round(time.monotonic() - began, 2))
    assert all(e.wait(120) == 0 for e in enqueuers)
    assert all(w.alive for w in workers), "a worker did not survive the restart"
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    expect.counters[COUNTER] = len(expect.runs)
    return expect, downtimes


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_9_redis_with_appendfsync_always_loses_nothing_acknowledged(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
    chaos: Chaos,
) -> None:
    procs = procs_factory(durable_redis.url)
    expect, downtimes = _load_with_restarts(
        durable_redis, procs, ledger, tmp_path, chaos, 3
    )
    client = durable_redis.client()
    drain = quiesce(client, fault_prefix, expect, timeout=120)
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="redis_kill_always",
        chaos=chaos,
        redis_kills=len(downtimes),
        downtime_s=downtimes,
        drain_seconds=round(drain, 1),
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_9_redis_with_appendfsync_everysec_measures_the_window(
    redis_server_factory: Callable[..., RedisServer],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
    chaos: Chaos,
) -> None:
    """everysec: a process crash loses nothing in practice (the page cache
    survives); the window is an OS crash. Measured, reported, not asserted
    zero; every other invariant is asserted on what survived."""
    server = redis_server_factory("--appendonly", "yes", "--appendfsync", "everysec")
    procs = procs_factory(server.url)
    kills: list[int] = []
    expect, downtimes = _load_with_restarts(
        server, procs, ledger, tmp_path, chaos, 3, kills
    )
    client = server.client()
    q = f"{fault_prefix}{{faults}}:run:"
    lost = {r for r in expect.runs if not client.exists(q + r)}
    expect.runs -= lost
    for key in list(expect.keys):
        expect.keys[key] -= lost
        if not expect.keys[key]:
            del expect.keys[key]
    expect.counters[COUNTER] = len(expect.runs)
    quiesce(client, fault_prefix, expect, timeout=120)
    surviving = _SurvivingLedger(ledger.path, kills)
    assert_invariants(
        client,
        fault_prefix,
        expect,
        surviving,
        scenario="redis_kill_everysec",
        chaos=chaos,
        redis_kills=len(downtimes),
        acknowledged_lost=len(lost),
        acknowledged_starts_lost=len(surviving.forgotten()),
    )


class _SurvivingLedger(Ledger):
    """The ledger without the executions Redis forgot.

    Under everysec, Redis postpones its AOF write for up to 2 s while a
    background fsync is still running, and answers meanwhile: a kill then loses
    acknowledged writes. A lost start makes the run start again as the same
    attempt and run its steps again, which I3 would flag. An execution counts as
    forgotten only when one of its steps started again in the same attempt and a
    kill fell between the two starts; its events before the second start are left
    out, and their number is reported, not asserted (the window is measured).
    """

    def __init__(self, path: Path, kills: list[int]) -> None:
        super().__init__(path)
        self._kills = kills

    def forgotten(self) -> dict[tuple[str, int], int]:
        """(run id, attempt) -> when its surviving execution began (ns)."""
        return self._forgotten(super().events())

    def _forgotten(self, events: list[Event]) -> dict[tuple[str, int], int]:
        starts: dict[tuple[str, str, int], list[int]] = {}
        for e in events:
            if e.event == "start":
                starts.setdefault((e.run_id, e.step, e.attempt), []).append(e.ns)
        cut: dict[tuple[str, int], int] = {}
        for (run_id, _step, attempt), times in starts.items():
            again = max(times)
            if len(times) > 1 and any(min(times) < k < again for k in self._kills):
                cut[run_id, attempt] = max(cut.get((run_id, attempt), 0), again)
        return cut

    def events(self) -> list[Event]:
        events = super().events()  # the file is read once
        cut = self._forgotten(events)
        return [e for e in events if e.ns >= cut.get((e.run_id, e.attempt), 0)]


def _consistent(client: redis.Redis, prefix: str) -> list[str]:
    """No half-applied script: what one script writes is all there or absent."""
    q = f"{prefix}{{faults}}:"
    bad: list[str] = []
    entries = {
        fields[b"r"].decode()
        for _id, fields in client.xrange(q + "stream")
        if b"r" in fields
    }
    runs = {k.decode()[len(q + "run:") :] for k in client.keys(q + "run:*")}
    bad += [
        f"idempotency key {key!r} without its run"
        for key in client.keys(q + "idem:*")
        if client.get(key).decode() not in runs
    ]
    for run_id in runs:
        status = client.hget(q + "run:" + run_id, "status")
        if status == b"queued" and run_id not in entries:
            bad.append(f"queued run {run_id} without a stream entry")
        if status in (b"completed", b"failed"):
            if run_id in entries:
                bad.append(f"finished run {run_id} still has its entry")
            if client.pttl(q + "run:" + run_id) == -1:
                bad.append(f"finished run {run_id} without retention TTL")
    bad += [f"stream entry for missing run {r}" for r in entries - runs]
    enqueued = int(client.hget(q + "stats", "enqueued") or 0)
    if enqueued != len(runs):
        bad.append(f"stats say {enqueued} enqueued, {len(runs)} run records")
    marks = len(client.keys(f"{prefix}{{c:{COUNTER}}}:seen:*"))
    value = int(client.hget(f"{prefix}{{c:{COUNTER}}}", "value") or 0)
    if marks != value:
        bad.append(f"counter {value} with {marks} increment marks")
    return bad


@pytest.mark.timeout(240)
def test_aof_cut_at_random_offsets_loads_without_half_applied_changes(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
    chaos: Chaos,
) -> None:
    """A workload's AOF, its last file cut at 20 random offsets (mid-command,
    mid-MULTI): each copy loads, and no script's effects are half there."""
    procs = procs_factory(durable_redis.url)
    procs.worker(lease=LEASE, concurrency=4)
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 4, "high": 20})
    procs.enqueuer(acked, 80, "--payload", payload, "--concurrency", "4").wait(60)
    wait_for(lambda: ledger.count("return") >= 40, timeout=60, message="work")
    durable_redis.kill()  # mid-workload
    aof_dir = durable_redis.dir / "appendonlydir"
    incr = max(aof_dir.glob("*.incr.aof"), key=lambda p: p.stat().st_size)
    size = incr.stat().st_size
    problems: dict[int, list[str]] = {}
    loaded = 0
    for i, offset in enumerate(sorted(chaos.randrange(size) for _ in range(20))):
        copy = tmp_path / f"cut-{i}"
        shutil.copytree(durable_redis.dir, copy, ignore=shutil.ignore_patterns("*.log"))
        with (copy / "appendonlydir" / incr.name).open("r+b") as f:
            f.truncate(offset)
        server = RedisServer(copy, "--appendonly", "yes", "--aof-load-truncated", "yes")
        try:
            server.start()
            loaded += 1
            bad = _consistent(server.client(), fault_prefix)
            if bad:
                problems[offset] = bad[:5]
        finally:
            server.kill()
    report_figures(
        "aof_truncation",
        {"cuts": 20, "aof_bytes": size, "loaded": loaded, "bad": len(problems)},
    )
    assert loaded == 20
    assert not problems, f"{problems}\n{chaos.replay_hint()}"


@pytest.mark.timeout(120)
def test_redis_restarting_empty_is_reported_loudly(
    redis_server_factory: Callable[..., RedisServer],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    server = redis_server_factory("--appendonly", "no")
    procs = procs_factory(server.url)
    worker = procs.worker(lease=LEASE)
    acked = tmp_path / "acked.tsv"
    procs.enqueuer(acked, 3, "--payload", '{"steps": 3}').wait(30)
    wait_for(lambda: ledger.count("return") >= 3, timeout=30, message="runs")
    server.restart()  # no persistence: it comes back empty
    lost = wait_for(
        lambda: worker.events("redis_data_lost"), timeout=30, message="the report"
    )
    assert lost[0]["level"] == "critical"
    assert worker.alive
