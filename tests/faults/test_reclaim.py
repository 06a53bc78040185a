"""Reclaim of a crashed worker's runs by an idle worker: the minimal form of
the first engine bug this suite hit (fixed in 9b1d0f0, found in parallel by
the durability tests); kept as a regression test."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from tests.support.redis_server import RedisServer

from .harness.checker import Expectations
from .harness.ledger import Ledger
from .harness.procs import Processes, read_acked, wait_for
from .harness.scenario import assert_invariants, quiesce

LEASE = 1.0


def test_idle_worker_reclaims_a_killed_workers_run(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    """Worker A dies (kill -9) in the middle of the only run; worker B, idle,
    must take it over once A's lease (1 s) has expired."""
    procs = procs_factory(durable_redis.url)
    a = procs.worker(lease=LEASE, concurrency=1)
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 3, "low": 3000, "high": 3000})
    procs.enqueuer(acked, 1, "--payload", payload).wait(30)
    wait_for(lambda: ledger.open_steps(a.pid), timeout=30, message="A to start")
    a.signal(signal.SIGKILL)
    a.kill()
    procs.worker(lease=LEASE, concurrency=1)
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    expect.counters = {}
    client = durable_redis.client()
    # lease 1 s, reclaim every 0.5 s, step 3 s x 3: 25 s is generous
    quiesce(client, fault_prefix, expect, timeout=25)
    assert_invariants(client, fault_prefix, expect, ledger, scenario="idle_reclaim")
