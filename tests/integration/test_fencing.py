"""Fencing (DESIGN §5): a worker that lost its entry cannot ack, checkpoint,
renew or complete it. Driven at the script level, two consumers, real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from stackshift import Stackshift
from stackshift.store import Lease
from stackshift.store.keys import GROUP
from tests.support.store_ops import complete, fail, release


async def started_lease(app: Stackshift, consumer: str) -> Lease:
    """Enqueue a run and start it as ``consumer``; return its lease."""
    store = app.store
    await store.ensure_group("fence")
    handle = await app.queue("fence").enqueue("job", {"n": 1})
    (entry,) = await store.read("fence", consumer, 10, 100)
    assert entry.run_id == handle.run_id
    (started,) = await store.start_many([entry], consumer)
    assert started.outcome == "ok" and started.lease is not None
    return started.lease


async def take_over(app: Stackshift, lease: Lease, consumer: str) -> Lease:
    """What a reclaimer does once the lease expired: XAUTOCLAIM, then start."""
    claimed = await app.store.autoclaim("fence", consumer, 0, 10)
    assert [e.entry_id for e in claimed] == [lease.entry_id]
    (started,) = await app.store.start_many(claimed, consumer)
    assert started.outcome == "ok" and started.lease is not None
    assert started.lease.deliveries == lease.deliveries + 1
    return started.lease


async def test_a_zombie_cannot_complete_checkpoint_renew_fail_or_release(
    app: Stackshift,
) -> None:
    zombie = await started_lease(app, "zombie")
    owner = await take_over(app, zombie, "owner")
    store = app.store

    assert await store.checkpoint(
        zombie, "step-1", b'{"n":1,"a":1,"t":0,"v":"zombie"}'
    ) == (
        "lost",
        None,
    )
    assert await store.renew("fence", "zombie", [zombie]) == ({zombie.entry_id}, set())
    assert await complete(store, zombie, b'"zombie"') is False
    assert await fail(store, zombie, b"{}", retry=True) == "lost"
    assert await release(store, zombie) is False

    # The entry is still pending, and still the owner's: the zombie removed nothing.
    pending = await store.client.xpending_range(
        store.keys.queue("fence").stream, GROUP, min="-", max="+", count=10
    )
    assert [(p["consumer"], p["times_delivered"]) for p in pending] == [(b"owner", 2)]

    assert await store.checkpoint(
        owner, "step-1", b'{"n":1,"a":2,"t":0,"v":"owner"}'
    ) == (
        "ok",
        None,
    )
    assert await complete(store, owner, b'"owner"') is True
    run = await app.get_run(owner.run_id)
    assert run is not None and run.status == "completed" and run.result == "owner"
    assert [(s.step_id, s.result) for s in run.steps] == [("step-1", "owner")]


async def test_the_first_checkpoint_of_a_step_wins(app: Stackshift) -> None:
    lease = await started_lease(app, "w1")
    first = b'{"n":1,"a":1,"t":0,"v":1}'
    assert await app.store.checkpoint(lease, "s", first) == ("ok", None)
    outcome, existing = await app.store.checkpoint(
        lease, "s", b'{"n":1,"a":1,"t":0,"v":2}'
    )
    assert (outcome, existing) == ("exists", first)


async def test_renewal_resets_the_idle_clock_without_moving_the_fence(
    app: Stackshift,
) -> None:
    lease = await started_lease(app, "w1")
    assert await app.store.renew("fence", "w1", [lease]) == (set(), set())
    # Not idle: nobody can claim it with a real lease timeout.
    assert await app.store.autoclaim("fence", "w2", 60_000, 10) == []
    assert await complete(app.store, lease, b"null") is True  # same fence still valid


async def test_an_entry_delivered_too_often_is_dead_lettered_as_poison(
    redis_url: str, prefix: str
) -> None:
    async with Stackshift(redis_url, prefix=prefix, max_deliveries=2) as app:
        lease = await started_lease(app, "w1")
        again = await take_over(app, lease, "w2")  # delivery 2: still allowed
        claimed = await app.store.autoclaim("fence", "w3", 0, 10)  # delivery 3
        (started,) = await app.store.start_many(claimed, "w3")
        assert started.outcome == "dead"
        run = await app.get_run(again.run_id)
        assert run is not None and run.status == "failed"
        assert run.error is not None and run.error.type == "WorkerLostError"
        assert "delivered 3 times" in run.error.message
        assert [r.run_id for r in await app.dead_letters("fence")] == [run.run_id]
        stream = app.store.keys.queue("fence").stream
        assert await app.store.client.xlen(stream) == 0  # acked and deleted


@pytest.mark.parametrize("fields", [{b"garbage": b"\xff\x00"}, {b"r": b"not-a-run-id"}])
async def test_undecodable_entries_are_buried_with_their_content(
    app: Stackshift, fields: dict[Any, Any]
) -> None:
    store = app.store
    await store.ensure_group("fence")
    await store.client.xadd(store.keys.queue("fence").stream, fields)
    (entry,) = await store.read("fence", "w1", 10, 100)
    (started,) = await store.start_many([entry], "w1")
    assert started.outcome == "gone"
    assert await store.bury(
        entry, "w1", "01" + "0" * 24 + ".fence", b'{"type":"X","message":"m"}'
    )
    (dead,) = await app.dead_letters("fence")
    assert dead.status == "failed" and dead.error is not None
    assert isinstance(dead.payload, dict) and set(dead.payload) == {
        k.decode() for k in fields
    }
    assert await store.client.xlen(store.keys.queue("fence").stream) == 0


async def test_entries_with_the_same_id_in_two_queues_keep_their_own_runs(
    app: Stackshift,
) -> None:
    """Two streams can mint the same entry id (same millisecond): never mix them up."""
    store = app.store
    runs = {}
    for queue in ("qa", "qb"):
        await store.ensure_group(queue)
        handle = await app.queue(queue).enqueue(f"job-{queue}", {}, delay=3600)
        await store.client.xadd(
            store.keys.queue(queue).stream, {"r": handle.run_id}, id="1-1"
        )
        runs[queue] = handle.run_id
    for queue in ("qa", "qb"):
        (entry,) = await store.read(queue, "w1", 10, 100)
        assert (entry.queue, entry.entry_id) == (queue, "1-1")
        (result,) = await store.start_many([entry], "w1")
        assert result.lease is not None and result.lease.run_id == runs[queue]
        assert result.run["job"] == f"job-{queue}".encode()


async def test_an_idle_worker_takes_over_a_dead_workers_run(app: Stackshift) -> None:
    """The fetch loop blocks on an empty queue; reclaiming must still happen."""
    from tests.support.workers import running_worker

    @app.job("orphan")
    async def orphan(ctx: Any) -> int:
        return int(ctx.attempt)

    await app.store.ensure_group("fence")
    handle = await app.queue("fence").enqueue("orphan", {})
    (entry,) = await app.store.read("fence", "dead-worker", 10, 100)
    (started,) = await app.store.start_many([entry], "dead-worker")  # then it "died"
    assert started.outcome == "ok"
    async with running_worker(app, ["fence"], lease_timeout=0.5):
        assert await handle.result(timeout=15) == 2


async def test_a_completion_sent_again_is_told_it_was_written(app: Stackshift) -> None:
    # A completion whose reply was lost is sent again (a fetch cancelled with
    # completions aboard): it finds its own write and is not refused.
    lease = await started_lease(app, "w1")
    assert await complete(app.store, lease, b'"once"') is True
    assert await complete(app.store, lease, b'"twice"') is True
    run = await app.store.get_run(lease.run_id)
    assert run is not None and run.status == "completed" and run.result == "once"
    stats = await app.store.client.hget(
        app.store.keys.queue("fence").stats, "completed"
    )
    assert stats == b"1"  # counted once
