"""fetch.lua: a worker with a backlog reads and starts a batch in one call."""

from __future__ import annotations

from stackshift import JobContext, Stackshift


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
