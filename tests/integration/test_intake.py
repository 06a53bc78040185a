"""A lane's intake: a queue's entries are read, then started in one start.lua
call per batch, which also carries the finishes held for it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stackshift import JobContext, RunStatus, Stackshift
from stackshift.store import (
    Complete,
    Entry,
    Lease,
    StartResult,
    Store,
    batching,
    intake,
)
from tests.support.waiting import wait_until


async def read_and_start(
    store: Store, queue: str, consumer: str, count: int
) -> list[tuple[Entry, StartResult]]:
    entries = await store.read(queue, consumer, count, 1)
    return list(zip(entries, await store.start_many(entries, consumer), strict=True))


async def started_leases(app: Stackshift, n: int) -> list[Lease]:
    """Enqueue ``n`` runs on queue fq and start them as consumer w1."""
    await app.store.ensure_group("fq")
    for i in range(n):
        await app.queue("fq").enqueue("job", {"n": i})
    started = await read_and_start(app.store, "fq", "w1", n)
    leases = [s.lease for _, s in started if s.lease is not None]
    assert len(leases) == n
    return leases


async def complete(store: Store, lease: Lease, result: bytes) -> bool:
    return (await store.finish(lease, Complete(result))).outcome == "ok"


def held(app: Stackshift) -> int:
    return len(app.store.batcher._pending)


async def status(app: Stackshift, lease: Lease) -> str | None:
    run = await app.get_run(lease.run_id)
    return run.status if run else None


async def test_a_batch_is_started_in_one_call(any_app: Stackshift) -> None:
    store = any_app.store
    await store.ensure_group("fq")
    handles = [await any_app.queue("fq").enqueue("job", {"n": n}) for n in range(3)]

    first = await read_and_start(store, "fq", "w1", 2)
    assert [e.run_id for e, _ in first] == [h.run_id for h in handles[:2]]
    for n, (_entry, started) in enumerate(first):
        assert started.outcome == "ok" and started.lease is not None
        assert started.lease.deliveries == 1 and started.lease.consumer == "w1"
        assert (
            started.run["job"] == b"job" and started.run["payload"] == b'{"n":%d}' % n
        )
    running = await any_app.get_run(handles[0].run_id)
    assert running is not None and running.status == "running" and running.attempt == 1

    rest = await read_and_start(store, "fq", "w1", 2)
    assert [e.run_id for e, _ in rest] == [handles[2].run_id]
    assert await read_and_start(store, "fq", "w1", 2) == []


async def test_an_entry_naming_no_valid_run_comes_back_to_be_buried(
    any_app: Stackshift,
) -> None:
    store = any_app.store
    await store.ensure_group("fq")
    stream = store.keys.queue("fq").stream
    await store.client.xadd(stream, {"r": "01M86881TA0QG8CR7PX5J163YQ.other"})
    await store.client.xadd(stream, {"x": "no run id at all"})
    good = await any_app.queue("fq").enqueue("job", {})
    started = await read_and_start(store, "fq", "w1", 10)
    assert [s.outcome for _, s in started] == ["gone", "gone", "ok"]
    assert started[2][0].run_id == good.run_id
    assert started[1][0].fields == {b"x": b"no run id at all"}


async def test_a_worker_drains_a_backlog_and_buries_what_it_cannot_run(
    any_app: Stackshift,
) -> None:
    ran: list[int] = []

    @any_app.job("count")
    async def count(ctx: JobContext[dict[str, int]]) -> None:
        ran.append(ctx.payload["n"])

    stream = any_app.store.keys.queue("default").stream
    await any_app.store.ensure_group("default")
    await any_app.queue().enqueue_many("count", [{"n": n} for n in range(50)])
    await any_app.store.client.xadd(stream, {"r": "not-a-run"})
    await any_app.queue().enqueue_many("count", [{"n": n} for n in range(50, 100)])
    worker = any_app.worker(["default"], burst=True, concurrency=10)
    await worker.run()  # a burst worker returns once the queue is empty
    assert sorted(ran) == list(range(100))
    (buried,) = await any_app.dead_letters("default")
    assert buried.error is not None and buried.error.type == "UndecodableEntryError"


async def test_a_worker_reads_each_of_its_queues_on_its_own(
    any_app: Stackshift,
) -> None:
    """One lane per queue: a read never spans queues (on a cluster they live
    in different slots), and a worker still serves all of them."""
    ran: list[str] = []

    @any_app.job("which")
    async def which(ctx: JobContext[dict[str, str]]) -> None:
        ran.append(ctx.payload["q"])

    for queue in ("qa", "qb", "qc"):
        await any_app.queue(queue).enqueue_many("which", [{"q": queue}] * 5)
    await any_app.worker(["qa", "qb", "qc"], burst=True, concurrency=2).run()
    assert sorted(ran) == ["qa"] * 5 + ["qb"] * 5 + ["qc"] * 5


async def test_a_start_carries_the_finishes_held_for_it(
    any_app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Held for as long as it takes: only the fetch can send them here.
    monkeypatch.setattr(batching, "HOLD_SECONDS", 3600.0)
    store = any_app.store
    first, second = await started_leases(any_app, 2)
    waiting = await any_app.queue("fq").enqueue("job", {"n": 2})
    store.carry_finishes("fq", True)
    done = [
        asyncio.ensure_future(complete(store, lease, b"%d" % i))
        for i, lease in enumerate((first, second))
    ]
    await wait_until(lambda: held(any_app) == 2, message="both completions held")
    assert await status(any_app, first) == RunStatus.RUNNING  # nothing sent yet

    ((entry, started),) = await read_and_start(store, "fq", "w1", 5)
    assert entry.run_id == waiting.run_id and started.outcome == "ok"
    assert await asyncio.wait_for(asyncio.gather(*done), 10) == [True, True]
    for lease, result in ((first, 0), (second, 1)):
        run = await any_app.get_run(lease.run_id)
        assert run is not None and run.status == RunStatus.COMPLETED
        assert run.result == result
    q = store.keys.queue("fq")
    assert await store.client.xlen(q.stream) == 1  # only the run just started
    assert await store.client.hget(q.stats, "completed") == b"2"
    store.carry_finishes("fq", False)


async def test_held_completions_go_out_alone_when_no_fetch_comes(
    any_app: Stackshift,
) -> None:
    (lease,) = await started_leases(any_app, 1)
    any_app.store.carry_finishes("fq", True)
    try:
        # No start follows: the completion waits HOLD_SECONDS at most.
        assert await asyncio.wait_for(complete(any_app.store, lease, b"1"), 10) is True
    finally:
        any_app.store.carry_finishes("fq", False)
    assert await status(any_app, lease) == RunStatus.COMPLETED


async def test_turning_carrying_off_sends_what_is_held(
    any_app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "HOLD_SECONDS", 3600.0)
    (lease,) = await started_leases(any_app, 1)
    any_app.store.carry_finishes("fq", True)
    done = asyncio.ensure_future(complete(any_app.store, lease, b"1"))
    await wait_until(lambda: held(any_app) == 1, message="the completion held")
    any_app.store.carry_finishes("fq", False)
    assert await asyncio.wait_for(done, 10) is True
    assert await status(any_app, lease) == RunStatus.COMPLETED


async def test_finishes_aboard_a_cancelled_start_are_sent_again(
    app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shutdown cancels the lane, maybe mid-call: whether the carried finishes
    # were written is unknown, so they are sent again; either way each run
    # ends completed once, and its finish says so. (Real Redis only: a
    # memory:// call never suspends, so it cannot be cut short.)
    monkeypatch.setattr(batching, "HOLD_SECONDS", 3600.0)
    store = app.store
    leases = await started_leases(app, 3)
    await app.queue("fq").enqueue("job", {"n": 3})
    entries = await store.read("fq", "w1", 5, 1)
    store.carry_finishes("fq", True)
    done = [asyncio.ensure_future(complete(store, lease, b"7")) for lease in leases]
    await wait_until(lambda: held(app) == 3, message="completions held")
    calling = asyncio.Event()  # set as the start sends its call
    call_many = intake._scripts.call_many

    async def signalling(*args: Any) -> Any:
        calling.set()
        return await call_many(*args)

    monkeypatch.setattr(intake._scripts, "call_many", signalling)
    start = asyncio.ensure_future(store.start_many(entries, "w1"))
    await calling.wait()
    assert held(app) == 0  # the start took them aboard
    start.cancel()  # while its call is in flight
    with pytest.raises(asyncio.CancelledError):
        await start
    store.carry_finishes("fq", False)
    assert await asyncio.wait_for(asyncio.gather(*done), 10) == [True] * 3
    for lease in leases:
        assert await status(app, lease) == RunStatus.COMPLETED
    stats = await store.client.hget(store.keys.queue("fq").stats, "completed")
    assert stats == b"3"
