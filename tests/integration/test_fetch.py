"""fetch.lua: a worker with a backlog reads and starts a batch in one call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stackshift import JobContext, RunStatus, Stackshift
from stackshift.store import Lease, batching, starting
from tests.support.waiting import wait_until


async def started_leases(app: Stackshift, n: int) -> list[Lease]:
    """Enqueue ``n`` runs on queue fq and start them as consumer w1."""
    await app.store.ensure_group("fq")
    for i in range(n):
        await app.queue("fq").enqueue("job", {"n": i})
    started = await app.store.fetch_started(["fq"], "w1", n)
    leases = [s.lease for _, s in started if s.lease is not None]
    assert len(leases) == n
    return leases


def held(app: Stackshift) -> int:
    return len(app.store.batcher._pending)


async def status(app: Stackshift, lease: Lease) -> str | None:
    run = await app.get_run(lease.run_id)
    return run.status if run else None


async def test_a_batch_is_read_and_started_in_one_call(any_app: Stackshift) -> None:
    store = any_app.store
    await store.ensure_group("fq")
    handles = [await any_app.queue("fq").enqueue("job", {"n": n}) for n in range(3)]

    first = await store.fetch_started(["fq"], "w1", 2)
    assert [e.run_id for e, _ in first] == [h.run_id for h in handles[:2]]
    for n, (_entry, started) in enumerate(first):
        assert started.outcome == "ok" and started.lease is not None
        assert started.lease.deliveries == 1 and started.lease.consumer == "w1"
        assert (
            started.run["job"] == b"job" and started.run["payload"] == b'{"n":%d}' % n
        )
    # The payload comes back once (in the start reply), not also with the entry.
    assert first[0][0].fields == {b"r": handles[0].run_id.encode()}
    running = await any_app.get_run(handles[0].run_id)
    assert running is not None and running.status == "running" and running.attempt == 1

    rest = await store.fetch_started(["fq"], "w1", 2)
    assert [e.run_id for e, _ in rest] == [handles[2].run_id]
    assert await store.fetch_started(["fq"], "w1", 2) == []


async def test_an_entry_naming_no_valid_run_comes_back_to_be_buried(
    any_app: Stackshift,
) -> None:
    store = any_app.store
    await store.ensure_group("fq")
    stream = store.keys.queue("fq").stream
    await store.client.xadd(stream, {"r": "01M86881TA0QG8CR7PX5J163YQ.other"})
    await store.client.xadd(stream, {"x": "no run id at all"})
    good = await any_app.queue("fq").enqueue("job", {})
    started = await store.fetch_started(["fq"], "w1", 10)
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


async def test_one_call_reads_and_starts_from_every_queue(any_app: Stackshift) -> None:
    store = any_app.store
    for queue in ("qa", "qb"):
        await store.ensure_group(queue)
    a = await any_app.queue("qa").enqueue("job", {"q": "a"})
    b = await any_app.queue("qb").enqueue("job", {"q": "b"})
    started = await store.fetch_started(["qa", "qb"], "w1", 5)
    assert sorted((e.queue, e.run_id) for e, _ in started) == [
        ("qa", a.run_id),
        ("qb", b.run_id),
    ]
    for entry, result in started:
        assert result.outcome == "ok" and result.lease is not None
        assert result.lease.queue == entry.queue


async def test_a_fetch_carries_the_completions_held_for_it(
    any_app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Held for as long as it takes: only the fetch can send them here.
    monkeypatch.setattr(batching, "HOLD_SECONDS", 3600.0)
    store = any_app.store
    first, second = await started_leases(any_app, 2)
    waiting = await any_app.queue("fq").enqueue("job", {"n": 2})
    store.carry_completions(True)
    done = [
        asyncio.ensure_future(store.complete(lease, b"%d" % i))
        for i, lease in enumerate((first, second))
    ]
    await wait_until(lambda: held(any_app) == 2, message="both completions held")
    assert await status(any_app, first) == RunStatus.RUNNING  # nothing sent yet

    ((entry, started),) = await store.fetch_started(["fq"], "w1", 5)
    assert entry.run_id == waiting.run_id and started.outcome == "ok"
    assert await asyncio.wait_for(asyncio.gather(*done), 10) == [True, True]
    for lease, result in ((first, 0), (second, 1)):
        run = await any_app.get_run(lease.run_id)
        assert run is not None and run.status == RunStatus.COMPLETED
        assert run.result == result
    q = store.keys.queue("fq")
    assert await store.client.xlen(q.stream) == 1  # only the run just started
    assert await store.client.hget(q.stats, "completed") == b"2"
    store.carry_completions(False)


async def test_held_completions_go_out_alone_when_no_fetch_comes(
    any_app: Stackshift,
) -> None:
    (lease,) = await started_leases(any_app, 1)
    any_app.store.carry_completions(True)
    try:
        # No fetch follows: the completion waits HOLD_SECONDS at most.
        assert await asyncio.wait_for(any_app.store.complete(lease, b"1"), 10) is True
    finally:
        any_app.store.carry_completions(False)
    assert await status(any_app, lease) == RunStatus.COMPLETED


async def test_turning_carrying_off_sends_what_is_held(
    any_app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "HOLD_SECONDS", 3600.0)
    (lease,) = await started_leases(any_app, 1)
    any_app.store.carry_completions(True)
    done = asyncio.ensure_future(any_app.store.complete(lease, b"1"))
    await wait_until(lambda: held(any_app) == 1, message="the completion held")
    any_app.store.carry_completions(False)
    assert await asyncio.wait_for(done, 10) is True
    assert await status(any_app, lease) == RunStatus.COMPLETED


async def test_completions_aboard_a_cancelled_fetch_are_sent_again(
    app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shutdown cancels the fetch loop, maybe mid-call: whether the carried
    # completions were written is unknown, so they are sent again; either way
    # each run ends completed once, and its complete() says so. (Real Redis
    # only: a memory:// call never suspends, so it cannot be cut short.)
    monkeypatch.setattr(batching, "HOLD_SECONDS", 3600.0)
    store = app.store
    leases = await started_leases(app, 3)
    store.carry_completions(True)
    done = [asyncio.ensure_future(store.complete(lease, b"7")) for lease in leases]
    await wait_until(lambda: held(app) == 3, message="completions held")
    calling = asyncio.Event()  # set as the fetch sends its call
    call_many = starting._scripts.call_many

    async def signalling(*args: Any) -> Any:
        calling.set()
        return await call_many(*args)

    monkeypatch.setattr(starting._scripts, "call_many", signalling)
    fetch = asyncio.ensure_future(store.fetch_started(["fq"], "w1", 5))
    await calling.wait()
    assert held(app) == 0  # the fetch took them aboard
    fetch.cancel()  # while its call is in flight
    with pytest.raises(asyncio.CancelledError):
        await fetch
    store.carry_completions(False)
    assert await asyncio.wait_for(asyncio.gather(*done), 10) == [True] * 3
    for lease in leases:
        assert await status(app, lease) == RunStatus.COMPLETED
    stats = await store.client.hget(store.keys.queue("fq").stats, "completed")
    assert stats == b"3"
