"""Issue #3 item 3: connection faults. A command executed by Redis whose reply
never arrives (execute-then-drop), CLIENT KILL of live connections, and Redis
unreachable for 10 s."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from stackshift import Stackshift
from stackshift.store.scripts import load_scripts
from tests.support.redis_server import RedisServer

from .harness.apps import COUNTER
from .harness.chaos import Chaos
from .harness.checker import Expectations, run_states
from .harness.ledger import Ledger
from .harness.procs import Processes, read_acked, wait_for
from .harness.proxy import FaultProxy
from .harness.scenario import assert_invariants, quiesce, report_figures

SHA = {name: script.sha.encode() for name, script in load_scripts().items()}
LEASE = 1.5


def _enqueue_through(proxy: FaultProxy, prefix: str, key: str | None) -> list[str]:
    async def go() -> list[str]:
        async with Stackshift(proxy.url, prefix=prefix) as app:
            handle = await app.queue("faults").enqueue(
                "multistep", {"steps": 1}, idempotency_key=key
            )
            if key is None:
                return [handle.run_id]
            again = await app.queue("faults").enqueue(
                "multistep", {"steps": 1}, idempotency_key=key
            )
            assert again.deduplicated
            return [handle.run_id, again.run_id]

    return anyio.run(go)


@pytest.mark.parametrize("key", ["order-42", None], ids=["with-key", "without-key"])
def test_enqueue_reply_lost_makes_one_run(
    durable_redis: RedisServer,
    proxy_factory: Callable[[int], FaultProxy],
    fault_prefix: str,
    key: str | None,
) -> None:
    """The enqueue script runs, its reply is lost, the client retries: one run
    (and, with a key, a second enqueue returns the same id)."""
    proxy = proxy_factory(durable_redis.port)
    rule = proxy.arm_drop(b"EVALSHA", SHA["enqueue"])
    ids = _enqueue_through(proxy, fault_prefix, key)
    assert rule.fired == 1
    client = durable_redis.client()
    q = f"{fault_prefix}{{faults}}:"
    assert len(set(ids)) == 1
    assert client.xlen(q + "stream") == 1
    assert client.hget(q + "stats", "enqueued") == b"1"
    assert run_states(client, fault_prefix, "faults", ids[:1]) == {ids[0]: "queued"}
    report_figures("enqueue_reply_lost", {"key": key, "faults": rule.fired, "runs": 1})


DROPS = {
    "xreadgroup": (b"XREADGROUP",),
    "start": (b"EVALSHA", SHA["start"]),
    "checkpoint": (b"EVALSHA", SHA["checkpoint"]),
    # finish.lua: every way a run leaves a worker (here: complete, retry)
    "finish": (b"EVALSHA", SHA["finish"]),
    "renew": (b"EVALSHA", SHA["renew"]),
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("target", list(DROPS))
def test_worker_reply_lost_harms_no_run(
    durable_redis: RedisServer,
    proxy_factory: Callable[[int], FaultProxy],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
    target: str,
) -> None:
    """Redis executes a worker's command (XREADGROUP / start, which carries
    finishes / checkpoint / finish / renew) and the reply is lost, 3 times over
    24 runs: no run duplicated or lost, no recorded step overwritten or run
    again."""
    proxy = proxy_factory(durable_redis.port)
    rule = proxy.arm_drop(*DROPS[target], times=3, skip_null=True)
    procs = procs_factory(proxy.url)
    for _ in range(2):
        procs.worker(lease=LEASE, concurrency=4)
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 3, "low": 10, "high": 400})
    procs.enqueuer(
        acked,
        24,
        "--payload",
        payload,
        "--concurrency",
        "4",
        env={"STACKSHIFT_REDIS_URL": durable_redis.url},
    ).wait(60)
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    expect.counters[COUNTER] = len(expect.runs)
    client = durable_redis.client()
    drain = quiesce(client, fault_prefix, expect, timeout=90)
    assert rule.fired >= 1, "the fault was never injected"
    assert all(w.alive for w in procs.all if w.name.startswith("w"))
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario=f"reply_lost_{target}",
        faults=rule.fired,
        drain_seconds=round(drain, 1),
    )


@pytest.mark.timeout(180)
def test_client_kill_mid_runs_harms_no_run(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
    chaos: Chaos,
) -> None:
    """CLIENT KILL of every worker and client connection at random moments
    while runs execute and enqueues arrive."""
    procs = procs_factory(durable_redis.url)
    workers = [procs.worker(lease=LEASE, concurrency=4) for _ in range(2)]
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 4, "low": 10, "high": 120})
    enqueuer = procs.enqueuer(acked, 150, "--payload", payload, "--pace-ms", "20")
    client = durable_redis.client()
    kills = 0
    killed = 0
    wait_for(lambda: ledger.count("start"), timeout=30, message="runs to start")
    while enqueuer.alive or kills < 15:
        time.sleep(chaos.uniform(0.1, 0.5))  # chaos: the moment of the next kill
        killed += int(client.client_kill_filter(_type="normal", skipme=True))
        kills += 1
        if kills > 200:
            break
    assert enqueuer.wait(60) == 0
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    expect.counters[COUNTER] = len(expect.runs)
    drain = quiesce(client, fault_prefix, expect, timeout=90)
    assert all(w.alive for w in workers), "a worker died of a dropped connection"
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="client_kill",
        chaos=chaos,
        client_kills=kills,
        connections_killed=killed,
        drain_seconds=round(drain, 1),
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_redis_unreachable_for_10_s_workers_back_off_and_recover(
    durable_redis: RedisServer,
    proxy_factory: Callable[[int], FaultProxy],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    """Connections to Redis are refused for 10 s in the middle of runs: the
    workers log, back off (no hot loop), stay up, and finish every run."""
    proxy = proxy_factory(durable_redis.port)
    procs = procs_factory(proxy.url)
    workers = [procs.worker(lease=LEASE, concurrency=4) for _ in range(2)]
    acked = tmp_path / "acked.tsv"
    payload = json.dumps({"steps": 4, "low": 200, "high": 600})
    direct = {"STACKSHIFT_REDIS_URL": durable_redis.url}
    procs.enqueuer(acked, 30, "--payload", payload, env=direct).wait(60)
    wait_for(lambda: ledger.count("start") >= 8, timeout=30, message="runs in flight")
    lines_before = sum(len(w.lines()) for w in workers)
    proxy.set_mode("reset")
    outage = 10.0
    time.sleep(outage)  # the fault itself lasts 10 s (not a synchronisation)
    proxy.set_mode("pass")
    assert all(w.alive for w in workers), "a worker exited during the outage"
    during = sum(len(w.lines()) for w in workers) - lines_before
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    expect.counters[COUNTER] = len(expect.runs)
    client = durable_redis.client()
    drain = quiesce(client, fault_prefix, expect, timeout=120)
    assert all(w.alive for w in workers), "a worker exited during the outage"
    warnings = [
        line
        for w in workers
        for line in w.lines()
        if line.get("level") in ("warning", "error", "critical")
    ]
    assert warnings, "the outage went unreported"
    # backoff: 2 workers, 10 s; a hot loop would log thousands of lines
    assert during < 400, f"{during} log lines in a 10 s outage: no backoff?"
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="redis_unreachable_10s",
        outage_seconds=outage,
        log_lines_during_outage=during,
        recovery_seconds=round(drain, 1),
    )
    for w in workers:
        w.signal(signal.SIGTERM)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_worker_survives_its_connections_being_reset(
    loop: str,
    durable_redis: RedisServer,
    proxy_factory: Callable[[int], FaultProxy],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    """Minimal form: an idle worker whose connections are reset (as when Redis
    crashes, or a middlebox drops them) stays up and runs the next run."""
    proxy = proxy_factory(durable_redis.port)
    procs = procs_factory(proxy.url)
    worker = procs.worker(lease=LEASE, concurrency=2, loop=loop)
    started = wait_for(
        lambda: worker.events("worker_started"), timeout=30, message="worker"
    )
    assert started[0]["event_loop"] == loop
    # Connections are accepted, then reset (as a middlebox or a dying Redis
    # would), in bursts, for 8 s or until the worker dies.
    end = time.monotonic() + 8.0
    while worker.alive and time.monotonic() < end:
        proxy.set_mode("reset")
        time.sleep(0.3)  # sync-ok: the fault's duration (reset burst)
        proxy.set_mode("pass")
        time.sleep(0.1)  # sync-ok: the fault's duration (pause between bursts)
    assert worker.alive, f"the worker exited:\n{worker.text()[-1500:]}"
    acked = tmp_path / "acked.tsv"
    direct = {"STACKSHIFT_REDIS_URL": durable_redis.url}
    procs.enqueuer(acked, 1, "--payload", '{"steps": 1}', env=direct).wait(30)
    expect = Expectations()
    expect.add_acked(read_acked(acked))
    expect.counters = {}
    client = durable_redis.client()
    quiesce(client, fault_prefix, expect, timeout=20)
    assert_invariants(client, fault_prefix, expect, ledger, scenario="reset_idle")


async def test_a_black_holed_connection_is_noticed_although_small_sends_are_untimed(
    durable_redis: RedisServer,
    proxy_factory: Callable[[int], FaultProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small sends skip redis-py's timed send (connection.py); the read timeout
    # must still turn a connection that swallows everything into an error.
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from stackshift.store import connection

    monkeypatch.setattr(connection, "SOCKET_TIMEOUT", 0.3)
    proxy = proxy_factory(durable_redis.port)
    client = connection.open_client(proxy.url)
    try:
        assert await client.ping() is True
        proxy.set_mode("blackhole")
        began = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.ping()
        assert time.monotonic() - began < 10  # the timeout and its 3 retries
        proxy.set_mode("pass")
        assert await client.ping() is True  # a fresh connection works again
    finally:
        proxy.set_mode("pass")
        await client.aclose()
