"""A run enqueued to run now has no record until it starts: the queue's index
(a hash per millisecond of run ids) says where its entry is (W7: bytes per
queued run). Everything a user sees of a queued run still works."""

from __future__ import annotations

from typing import Any

from stackshift import JobContext, RunStatus, Stackshift
from stackshift.store.keys import new_run_id
from stackshift.store.records import EnqueueRequest
from tests.support.store_ops import read_and_start
from tests.support.workers import running_worker


async def test_a_queued_run_is_indexed_and_shown_without_a_record(
    any_app: Stackshift,
) -> None:
    handle = await any_app.queue().enqueue("job", {"n": 1}, correlation_id="web-1")
    client, q = any_app.store.client, any_app.store.keys.queue("default")
    assert await client.exists(q.run(handle.run_id)) == 0
    ((entry_id, fields),) = await client.xrange(q.stream)
    assert fields[b"r"] == handle.run_id.encode()
    assert await client.hget(*q.queued_index(handle.run_id)) == entry_id

    run = await any_app.get_run(handle.run_id)
    assert run is not None
    assert (run.status, run.job, run.payload) == (RunStatus.QUEUED, "job", {"n": 1})
    assert run.correlation_id == "web-1" and run.attempt == 0


async def test_starting_moves_the_run_from_the_index_to_its_record(
    app: Stackshift,
) -> None:
    @app.job("job")
    async def job(ctx: JobContext[Any]) -> int:
        return int(ctx.payload["n"]) * 2

    handle = await app.queue().enqueue("job", {"n": 21}, correlation_id="web-2")
    async with running_worker(app):
        assert await handle.result(timeout=10) == 42
    q = app.store.keys.queue("default")
    assert await app.store.client.hexists(*q.queued_index(handle.run_id)) == 0
    run = await app.get_run(handle.run_id)
    assert run is not None and run.status == RunStatus.COMPLETED
    assert (run.job, run.payload, run.correlation_id) == ("job", {"n": 21}, "web-2")


async def test_a_repeated_enqueue_adds_nothing_before_or_after_the_start(
    any_app: Stackshift,
) -> None:
    # A reply lost on the wire: the same request (same run id) is sent again.
    store, q = any_app.store, any_app.store.keys.queue("default")
    req = EnqueueRequest(new_run_id("default"), "job", b'{"n":1}')
    first = await store.enqueue("default", req)
    again = await store.enqueue("default", req)
    assert (again.run_id, again.deduplicated) == (first.run_id, False)
    assert await store.client.xlen(q.stream) == 1

    await store.ensure_group("default")
    ((_entry, started),) = await read_and_start(store, "default", "w1", 10)
    assert started.outcome == "ok"
    await store.enqueue("default", req)  # now the record exists, not the index
    assert await store.client.xlen(q.stream) == 1


async def test_an_indexed_entry_without_its_run_is_buried_leaving_nothing_queued(
    any_app: Stackshift,
) -> None:
    # Written by something other than stackshift: the index names the entry,
    # but the entry does not carry a job and payload.
    store, q = any_app.store, any_app.store.keys.queue("default")
    await store.ensure_group("default")
    run_id = new_run_id("default")
    entry_id = await store.client.xadd(q.stream, {"r": run_id})
    await store.client.hset(*q.queued_index(run_id), entry_id)
    ((_entry, started),) = await read_and_start(store, "default", "w1", 10)
    assert started.outcome == "gone"
    assert await store.client.exists(q.run(run_id)) == 0
    assert await store.client.hexists(*q.queued_index(run_id)) == 0
    assert await any_app.get_run(run_id) is None


async def test_many_queued_runs_share_a_few_index_keys(app: Stackshift) -> None:
    handles = await app.queue().enqueue_many("job", [{"n": n} for n in range(1000)])
    prefix = app.settings.prefix
    keys = [k async for k in app.store.client.scan_iter(match=f"{prefix}*")]
    # Before the index: one record key per queued run (1,000 keys).
    assert len(keys) < 100
    runs = [await app.get_run(h.run_id) for h in handles[::97]]
    assert all(r is not None and r.status == RunStatus.QUEUED for r in runs)


async def test_entries_read_but_never_started_keep_their_run_when_handed_back(
    app: Stackshift,
) -> None:
    # A read cut short by a shutdown: the entries are pending for the worker,
    # which hands them back; their job and payload live only in the entry.
    seen: list[int] = []

    @app.job("job")
    async def job(ctx: JobContext[Any]) -> None:
        seen.append(int(ctx.payload["n"]))

    store = app.store
    queue = app.queue()
    plain = await queue.enqueue("job", {"n": 1})
    keyed = await queue.enqueue("job", {"n": 2}, idempotency_key="order-2")
    await store.ensure_group("default")
    assert len(await store.read("default", "cut", 10, 100)) == 2
    assert await store.release_pending("default", "cut") == 2

    async with running_worker(app):
        assert await plain.result(timeout=10) is None
        assert await keyed.result(timeout=10) is None
    assert sorted(seen) == [1, 2]
    assert await app.dead_letters("default") == []


async def test_a_first_start_writes_the_whole_record_from_the_entry(
    any_app: Stackshift,
) -> None:
    # The first start of an indexed run writes its record in one go, from the
    # entry, and gives the runner what it needs (its creation time included).
    store, q = any_app.store, any_app.store.keys.queue("default")
    await store.ensure_group("default")
    a = await any_app.queue().enqueue("job", {"n": 1}, correlation_id="web-3")
    b = await any_app.queue().enqueue("job", {"n": 2})
    (entry_a,) = await store.read("default", "w1", 1, 100)
    (started_a,) = await store.start_many([entry_a], "w1")
    ((entry_b, started_b),) = await read_and_start(store, "default", "w1", 1)

    for handle, entry, started, payload, correlation in (
        (a, entry_a, started_a, b'{"n":1}', b"web-3"),
        (b, entry_b, started_b, b'{"n":2}', None),
    ):
        assert started.outcome == "ok" and started.lease is not None
        assert started.steps == {}
        expected = {
            "job": b"job",
            "payload": payload,
            "attempt": b"1",
            "created_at": entry.entry_id.split("-")[0].encode(),
        }
        if correlation:
            expected["correlation_id"] = correlation
        assert started.run == expected
        record = await store.client.hgetall(q.run(handle.run_id))
        assert set(record) == {
            b"job",
            b"payload",
            b"created_at",
            b"status",
            b"started_at",
            b"worker",
            b"entry",
            b"attempt",
        } | ({b"correlation_id"} if correlation else set())
        assert record[b"status"] == b"running" and record[b"attempt"] == b"1"
        assert record[b"worker"] == b"w1"
        assert record[b"entry"] == entry.entry_id.encode()
        assert record[b"created_at"] == entry.entry_id.split("-")[0].encode()
        run = await any_app.get_run(handle.run_id)
        assert run is not None and run.status == RunStatus.RUNNING
        assert run.attempt == 1 and run.started_at is not None
