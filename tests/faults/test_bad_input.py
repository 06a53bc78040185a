"""Issue #3 item 4: bad input gets a clear error, is dead-lettered or refused,
and harms no other run."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from stackshift import Stackshift
from stackshift.errors import InvalidNameError, PayloadError
from tests.support.redis_server import RedisServer

from .harness.apps import COUNTER
from .harness.checker import Expectations
from .harness.ledger import Ledger
from .harness.procs import Processes, wait_for
from .harness.proxy import FaultProxy
from .harness.scenario import assert_invariants, quiesce, report_figures

LEASE = 1.5


def _enqueue(url: str, prefix: str, *calls: tuple[str, Any]) -> list[str]:
    async def go() -> list[str]:
        async with Stackshift(url, prefix=prefix) as app:
            q = app.queue("faults")
            return [(await q.enqueue(job, payload)).run_id for job, payload in calls]

    return anyio.run(go)


@pytest.mark.timeout(120)
def test_undecodable_entries_and_unknown_jobs_are_dead_lettered(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    """Entries written behind stackshift's back and a run of an unknown job are
    dead-lettered with a reason; the good runs around them all complete."""
    client = durable_redis.client()
    stream = f"{fault_prefix}{{faults}}:stream"
    client.xgroup_create(stream, "stackshift", id="0", mkstream=True)
    raw: list[dict[bytes, bytes]] = [
        {b"junk": bytes(range(256))},
        {b"r": b"\xff\xfe\x00"},
        {b"r": b"not-a-run-id"},
        {b"r": b"01M8000000000000000000000A.faults"},  # well-formed, no record
        {b"r": b"01M8000000000000000000000A.other"},  # another queue's id
        {b"r": b"x" * 100_000},
    ]
    good_before = _enqueue(
        durable_redis.url, fault_prefix, *[("multistep", {"steps": 3})] * 5
    )
    for fields in raw:
        client.xadd(stream, fields)
    unknown = _enqueue(durable_redis.url, fault_prefix, ("no.such.job", {"a": 1}))
    good_after = _enqueue(
        durable_redis.url, fault_prefix, *[("multistep", {"steps": 3})] * 5
    )
    procs = procs_factory(durable_redis.url)
    worker = procs.worker(lease=LEASE)
    expect = Expectations(allow_dead=True)
    expect.runs = set(good_before + unknown + good_after)
    expect.counters[COUNTER] = 10
    quiesce(client, fault_prefix, expect, timeout=60)
    wait_for(
        lambda: client.xlen(stream) == 0, timeout=30, message="the stream to empty"
    )
    assert worker.alive
    q = f"{fault_prefix}{{faults}}:"
    dead = [x.decode() for x in client.zrange(q + "dead", 0, -1)]
    assert unknown[0] in dead
    assert len(dead) == len(raw) + 1
    for run_id in dead:
        error = json.loads(client.hget(q + "run:" + run_id, "error") or b"{}")
        assert error.get("message"), f"{run_id} was dead-lettered without a reason"
    states = [client.hget(q + "run:" + r, "status") for r in good_before + good_after]
    assert states == [b"completed"] * 10
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="undecodable_entries",
        raw_entries=len(raw),
        dead_lettered_total=len(dead),
    )


def test_payload_over_the_limit_is_refused_before_any_io(
    durable_redis: RedisServer,
    proxy_factory: Callable[[int], FaultProxy],
    fault_prefix: str,
) -> None:
    """512 KiB by default, configurable; a clear PayloadError; nothing sent."""
    proxy = proxy_factory(durable_redis.port)

    async def go() -> None:
        async with Stackshift(proxy.url, prefix=fault_prefix) as app:
            with pytest.raises(PayloadError, match=r"limit is 524288"):
                await app.queue("faults").enqueue("multistep", {"blob": "x" * 530_000})
        async with Stackshift(
            proxy.url, prefix=fault_prefix, max_payload_bytes=1024
        ) as app:
            with pytest.raises(PayloadError, match="max_payload_bytes"):
                await app.queue("faults").enqueue("multistep", {"blob": "x" * 2000})

    anyio.run(go)
    assert proxy.commands == 0, f"commands reached Redis: {proxy.seen}"
    assert durable_redis.client().dbsize() == 0


BAD_NAMES = [
    "",
    "a b",
    "{x}",
    "x}",
    "*",
    "a?",
    "[a]",
    "a:b",
    "a" * 65,
    "é",
    "a\x00b",
    "tab\t",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_queue_and_job_names_are_refused(
    durable_redis: RedisServer, fault_prefix: str, name: str
) -> None:
    async def go() -> None:
        async with Stackshift(durable_redis.url, prefix=fault_prefix) as app:
            with pytest.raises(InvalidNameError):
                app.queue(name)
            with pytest.raises(InvalidNameError):
                await app.queue("faults").enqueue(name, {})

    anyio.run(go)
    assert durable_redis.client().dbsize() == 0


def test_idempotency_keys_cannot_escape_the_key_layout(
    durable_redis: RedisServer, fault_prefix: str
) -> None:
    """Keys with braces, globs, spaces or NUL are hashed; too long or empty
    keys are refused; every key Redis holds keeps the queue's hash tag."""
    hostile = ["{other}", "*", "a b", "x\x00y", "ключ", "h:abc", "[a-z]?", "a" * 1024]

    async def go() -> None:
        async with Stackshift(durable_redis.url, prefix=fault_prefix) as app:
            q = app.queue("faults")
            for key in hostile:
                first = await q.enqueue("multistep", {}, idempotency_key=key)
                again = await q.enqueue("multistep", {}, idempotency_key=key)
                assert again.run_id == first.run_id and again.deduplicated
            for bad in ["", "a" * 1025]:
                with pytest.raises(InvalidNameError):
                    await q.enqueue("multistep", {}, idempotency_key=bad)

    anyio.run(go)
    layout = re.compile(
        re.escape(fault_prefix)
        + r"(\{faults\}:(stream|stats|idem:([A-Za-z0-9_.:@/=+-]{1,100}|h:[0-9a-f]{64})|run:[0-9A-Z]{26}\.faults)"
        + r"|\{registry\}:queues)$"
    )
    keys = [k.decode() for k in durable_redis.client().keys("*")]
    assert len([k for k in keys if ":idem:" in k]) == len(hostile)
    strays = [k for k in keys if not layout.match(k)]
    assert not strays, f"keys outside the layout: {strays}"
    report_figures("hostile_keys", {"keys": len(keys), "hostile": len(hostile)})


@pytest.mark.timeout(120)
def test_handler_that_never_returns_times_out_and_harms_no_run(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
) -> None:
    """A handler awaiting forever hits its 1 s timeout and is dead-lettered
    with JobTimeoutError; the other runs complete."""
    stuck = _enqueue(durable_redis.url, fault_prefix, ("sleeper", {}))
    good = _enqueue(durable_redis.url, fault_prefix, *[("multistep", {"steps": 3})] * 6)
    procs = procs_factory(durable_redis.url)
    procs.worker(lease=LEASE, concurrency=2)
    expect = Expectations(allow_dead=True)
    expect.runs = set(stuck + good)
    expect.counters[COUNTER] = len(good)
    client = durable_redis.client()
    quiesce(client, fault_prefix, expect, timeout=60)
    q = f"{fault_prefix}{{faults}}:"
    assert client.hget(q + "run:" + stuck[0], "status") == b"failed"
    error = json.loads(client.hget(q + "run:" + stuck[0], "error") or b"{}")
    assert error["type"] == "JobTimeoutError", error
    assert_invariants(client, fault_prefix, expect, ledger, scenario="never_returns")


@pytest.mark.timeout(120)
def test_handler_blocking_the_loop_is_reported_and_its_late_writes_refused(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    """A handler blocks its worker's event loop for 3x the lease: the worker
    reports it (event_loop_blocked), another worker takes the run over, and
    the blocked attempt's late step write is refused (the record is the new
    owner's); the counter is exact."""
    procs = procs_factory(durable_redis.url)
    first = procs.worker(lease=LEASE, concurrency=1)
    wait_for(lambda: first.events("worker_started"), timeout=30, message="w0")
    blocked = _enqueue(
        durable_redis.url, fault_prefix, ("blocker", {"seconds": 3 * LEASE})
    )
    wait_for(lambda: ledger.count("begin"), timeout=30, message="the block to begin")
    second = procs.worker(lease=LEASE, concurrency=2)
    good = _enqueue(durable_redis.url, fault_prefix, *[("multistep", {"steps": 3})] * 4)
    expect = Expectations()
    expect.runs = set(blocked + good)
    expect.counters[COUNTER] = 1 + len(good)
    client = durable_redis.client()
    quiesce(client, fault_prefix, expect, timeout=60)
    wait_for(
        lambda: first.events("event_loop_blocked"),
        timeout=30,
        message="the blocked loop to be reported",
    )
    assert first.events("event_loop_blocked")[0]["level"] == "critical"
    assert first.alive and second.alive
    assert_invariants(
        client,
        fault_prefix,
        expect,
        ledger,
        scenario="blocked_loop",
        attempts=int(
            client.hget(f"{fault_prefix}{{faults}}:run:{blocked[0]}", "attempt") or 0
        ),
    )
