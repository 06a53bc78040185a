"""Counters stay exact when an attempt is replayed (issue #3: counters exact)."""

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


def test_increment_inside_a_step_then_after_it_counts_both(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    """Attempt 1 increments inside step ``a`` (recorded), then is handed back
    (SIGTERM, grace over) before its second increment; attempt 2 replays ``a``
    and makes the second increment: the counter must end at 2."""
    procs = procs_factory(durable_redis.url)
    a = procs.worker(lease=2.0, grace=0.2, concurrency=1)
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"counter": "inside"})
    procs.enqueuer(acked, 1, "--job", "inside_step_counter", "--payload", payload).wait(
        30
    )
    wait_for(lambda: ledger.count("got"), timeout=30, message="step a to be recorded")
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0
    procs.worker(lease=2.0, concurrency=1)
    expect = Expectations(check_steps=False)
    expect.add_acked(read_acked(acked))
    expect.counters["inside"] = 2
    client = durable_redis.client()
    quiesce(client, fault_prefix, expect, timeout=30)
    assert_invariants(
        client, fault_prefix, expect, ledger, scenario="inside_step_counter"
    )
