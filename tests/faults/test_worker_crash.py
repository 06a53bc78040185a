"""Issue #3 item 1: kill -9 workers at random moments of multi-step runs."""

from __future__ import annotations

import json
import os
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

TRIALS = int(os.environ.get("FAULT_CRASH_TRIALS", "50"))
LEASE = 1.5


def test_smoke_runs_finish_with_invariants(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    """No fault: the harness itself (workers, enqueuer, ledger, checker) agrees."""
    procs = procs_factory(durable_redis.url)
    procs.worker(lease=LEASE)
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 5, "high": 20})
    procs.enqueuer(acked, 30, "--payload", payload, "--concurrency", "4").wait(60)
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    assert len(expect.runs) == 30
    expect.counters[COUNTER] = 30
    client = durable_redis.client()
    quiesce(client, fault_prefix, expect, timeout=60)
    assert_invariants(client, fault_prefix, expect, ledger, scenario="smoke")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_kill_9_workers_mid_run_loses_nothing(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
    chaos: Chaos,
) -> None:
    """Over TRIALS kills at random moments (mid-step, between a step body and
    its checkpoint, in the fetch loop), other workers finish every run: none
    lost, no recorded step run again, the counter exact, no run completed twice."""
    procs = procs_factory(durable_redis.url)
    workers = [procs.worker(lease=LEASE, concurrency=3) for _ in range(3)]
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 5, "low": 20, "high": 150})
    enqueuer = procs.enqueuer(
        acked, 20 * TRIALS, "--payload", payload, "--pace-ms", "15"
    )  # a steady flow of runs for the whole chaos period
    kills = 0
    interrupted = 0
    began = time.monotonic()
    while kills < TRIALS:
        victim = chaos.choice([w for w in workers if w.alive])
        # a random moment, once the victim is in the middle of a run
        wait_for(
            lambda v=victim: ledger.open_steps(v.pid),
            timeout=60,
            message="a run in flight",
        )
        time.sleep(chaos.uniform(0.0, 0.25))  # chaos: the moment of the kill
        interrupted += bool(ledger.open_steps(victim.pid))
        victim.signal(signal.SIGKILL)
        victim.kill()
        kills += 1
        workers = [w for w in workers if w.alive] + [
            procs.worker(lease=LEASE, concurrency=3)
        ]
    chaos_seconds = time.monotonic() - began
    enqueuer.wait(300)
    client = durable_redis.client()
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    alive = {w.name for w in workers}

    def settled() -> bool:
        """Every run finished, or held by a worker that is dead."""
        q = f"{fault_prefix}{{faults}}:run:"
        pipe = client.pipeline(transaction=False)
        for run_id in expect.runs:
            pipe.hmget(q + run_id, "status", "worker")
        for status, worker in pipe.execute():
            if status in (b"completed", b"failed"):
                continue
            if status == b"running" and worker.decode() not in alive:
                continue
            return False
        return True

    wait_for(settled, timeout=180, interval=0.2, message="the live workers to settle")
    # The last trial, with every other worker idle: only a reclaim saves it.
    last = tmp_path / "last.tsv"
    slow = json.dumps({"steps": 3, "low": 1000, "high": 1000})
    procs.enqueuer(last, 1, "--payload", slow).wait(60)
    holder = wait_for(
        lambda: next((w for w in workers if ledger.open_steps(w.pid)), None),
        timeout=60,
        message="the last run to start",
    )
    holder.signal(signal.SIGKILL)
    holder.kill()
    kills += 1
    expect.add_acked(read_acked(last))
    expect.counters[COUNTER] = len(expect.runs)
    drain = quiesce(client, fault_prefix, expect, timeout=60)
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="worker_crash",
        chaos=chaos,
        kills=kills,
        kills_mid_step=interrupted,
        chaos_seconds=round(chaos_seconds, 1),
        drain_seconds=round(drain, 1),
    )
