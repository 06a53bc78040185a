"""Issue #3 item 3: zombies (a worker stopped past its lease, then resumed)
and a stalled Redis (SIGSTOP of redis-server longer than the lease)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer

from .harness.apps import COUNTER
from .harness.chaos import Chaos
from .harness.checker import Expectations
from .harness.ledger import Ledger
from .harness.procs import Processes, read_acked, wait_for
from .harness.scenario import assert_invariants, quiesce

LEASE = 1.5


@pytest.mark.timeout(180)
def test_worker_stopped_past_its_lease_then_resumed_writes_nothing(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
    chaos: Chaos,
) -> None:
    """SIGSTOP a worker in the middle of its runs for 3x its lease; the other
    worker takes them over and finishes them; SIGCONT: the zombie's renewals,
    checkpoints and completions are refused, nothing is lost or doubled."""
    procs = procs_factory(durable_redis.url)
    zombie = procs.worker(lease=LEASE, concurrency=4)
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 5, "low": 100, "high": 300})
    procs.enqueuer(acked, 12, "--payload", payload, "--concurrency", "4").wait(30)
    wait_for(
        lambda: ledger.open_steps(zombie.pid), timeout=30, message="runs in flight"
    )
    time.sleep(chaos.uniform(0.0, 0.3))  # chaos: the moment of the stop
    zombie.signal(signal.SIGSTOP)
    other = procs.worker(lease=LEASE, concurrency=4)
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    expect.counters[COUNTER] = len(expect.runs)
    client = durable_redis.client()
    # the zombie stays stopped until the others took its runs over
    wait_for(
        lambda: any(e.pid == other.pid for e in ledger.events()),
        timeout=60,
        message="a takeover",
    )
    end = time.monotonic() + 3 * LEASE  # stopped for (at least) 3x the lease
    while time.monotonic() < end:
        time.sleep(0.1)  # sync-ok: the fault's duration (process stopped)
    zombie.signal(signal.SIGCONT)
    drain = quiesce(client, fault_prefix, expect, timeout=90)
    wait_for(lambda: zombie.events("lease_lost") or zombie.events("run_finished"),
             timeout=30, message="the zombie to notice")  # fmt: skip
    assert zombie.alive and other.alive
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="zombie_sigstop",
        chaos=chaos,
        zombie_lease_lost=len(zombie.events("lease_lost")),
        drain_seconds=round(drain, 1),
    )


@pytest.mark.timeout(180)
def test_redis_stalled_longer_than_the_lease_mass_reclaim_breaks_nothing(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
    chaos: Chaos,
) -> None:
    """SIGSTOP redis-server for 2.5x the lease with runs in flight on 3
    workers: on resume every entry looks idle; the reclaim that follows
    keeps every invariant (duplicate step bodies are counted, not failed)."""
    procs = procs_factory(durable_redis.url)
    workers = [procs.worker(lease=LEASE, concurrency=4) for _ in range(3)]
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 4, "low": 50, "high": 400})
    procs.enqueuer(acked, 60, "--payload", payload, "--concurrency", "4").wait(30)
    stalls = 2
    for _ in range(stalls):
        wait_for(lambda: sum(len(ledger.open_steps(w.pid)) for w in workers) >= 4,
                 timeout=60, message="runs in flight")  # fmt: skip
        time.sleep(chaos.uniform(0.0, 0.3))  # chaos: the moment of the stall
        durable_redis.signal(signal.SIGSTOP)
        try:
            end = time.monotonic() + 2.5 * LEASE  # the stall itself
            while time.monotonic() < end:
                time.sleep(0.1)  # sync-ok: the fault's duration (process stopped)
        finally:
            durable_redis.signal(signal.SIGCONT)
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    expect.counters[COUNTER] = len(expect.runs)
    client = durable_redis.client()
    drain = quiesce(client, fault_prefix, expect, timeout=120)
    assert all(w.alive for w in workers)
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="redis_stall",
        chaos=chaos,
        stalls=stalls,
        reclaims=sum(len(w.events("runs_reclaimed")) for w in workers),
        drain_seconds=round(drain, 1),
    )
