"""A run enqueued to run now travels in its stream entry (job, payload,
correlation id), and a worker starts it from the entry while start.lua confirms
it in parallel. Its writes wait for that confirmation; a run that may not run
writes nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stackshift import JobContext, Stackshift
from stackshift.queue import RunHandle
from stackshift.store import Entry, Lease, StartResult, may_run
from stackshift.store.records import confirmed
from tests.support.store_ops import complete
from tests.support.waiting import wait_until
from tests.support.workers import running_worker


async def test_a_queued_run_shows_its_job_payload_and_creation_time(
    app: Stackshift,
) -> None:
    @app.job("greet")
    async def greet(ctx: JobContext[dict[str, str]]) -> str:
        return f"hello {ctx.payload['name']}"

    before = datetime.now(UTC)
    handle = await app.queue().enqueue("greet", {"name": "ada"})
    queued = await app.get_run(handle.run_id)
    assert queued is not None and queued.status == "queued"
    assert queued.job == "greet" and queued.payload == {"name": "ada"}
    assert queued.attempt == 0 and queued.created_at is not None
    assert abs(queued.created_at - before) < timedelta(seconds=5)

    async with running_worker(app):
        assert await handle.result(timeout=10) == "hello ada"
    done = await app.get_run(handle.run_id)
    # The record took job and payload over from the entry, which is gone now.
    assert done is not None and done.status == "completed" and done.attempt == 1
    assert done.job == "greet" and done.payload == {"name": "ada"}
    assert done.created_at == queued.created_at


async def read_and_start_early(
    app: Stackshift,
) -> tuple[RunHandle, Entry, StartResult, Lease]:
    """Enqueue a run on queue ``early``, read its entry as worker ``w1`` and
    start it from the entry (no start.lua yet)."""
    store = app.store
    await store.ensure_group("early")
    handle = await app.queue("early").enqueue("job", {"n": 1})
    (entry,) = await store.read("early", "w1", 10, 100)
    early = store.early_start(entry, "w1")
    assert early is not None and early.lease is not None
    return handle, entry, early, early.lease


async def test_writes_of_an_early_started_run_wait_for_its_start(
    app: Stackshift,
) -> None:
    store = app.store
    handle, entry, early, lease = await read_and_start_early(app)
    assert early.run["payload"] == b'{"n":1}' and early.run["job"] == b"job"

    # The run finishes before its start is confirmed: the write must wait.
    completing = asyncio.ensure_future(complete(store, lease, b'"done"'))
    # Given time to land, it does not: it waits (bounded, to see a non-event).
    done, _ = await asyncio.wait({completing}, timeout=0.3)
    assert not done
    # As the worker calls it: the run was started early, so only its outcome
    # comes back (the script does not send job and payload back).
    (started,) = await store.start_many([entry], "w1", early={0})
    assert started.outcome == "ok" and started.run == {}
    record = await store.client.hgetall(store.keys.queue("early").run(handle.run_id))
    assert record[b"status"] == b"running" and record[b"job"] == b"job"
    assert record[b"payload"] == b'{"n":1}' and record[b"attempt"] == b"1"
    assert lease.ready is not None
    store.settle(lease.ready, frozenset())  # none of the batch refused
    assert await asyncio.wait_for(completing, 5) is True

    run = await app.get_run(handle.run_id)
    # Had the completion landed first, start.lua would have found the entry
    # gone, and the record would lack its job and payload.
    assert run is not None and run.status == "completed" and run.result == "done"
    assert run.job == "job" and run.payload == {"n": 1} and run.attempt == 1


async def test_a_finish_its_gate_releases_while_finishes_are_held_still_goes_out(
    app: Stackshift,
) -> None:
    """A lane working through a backlog holds finishes back for its next start
    call to carry: a finish that waited for its batch's start joins them when
    the gate settles, and goes out (carried, or on its own after a couple of
    milliseconds), never stranded."""
    store = app.store
    handle, entry, _early, lease = await read_and_start_early(app)
    store.carry_finishes("early", True)
    try:
        completing = asyncio.ensure_future(complete(store, lease, b'"held"'))
        (started,) = await store.start_many([entry], "w1", early={0})
        assert started.outcome == "ok"
        done, _ = await asyncio.wait({completing}, timeout=0.2)
        assert not done  # its gate is not settled yet: it waits
        assert lease.ready is not None
        store.settle(lease.ready, frozenset())
        assert await asyncio.wait_for(completing, 5) is True
    finally:
        store.carry_finishes("early", False)
    run = await app.get_run(handle.run_id)
    assert run is not None and run.status == "completed" and run.result == "held"


async def test_an_early_started_run_that_may_not_run_writes_nothing(
    app: Stackshift,
) -> None:
    store = app.store
    handle, _entry, _early, lease = await read_and_start_early(app)
    completing = asyncio.ensure_future(complete(store, lease, b'"done"'))
    assert lease.ready is not None
    store.settle(lease.ready, frozenset({lease.entry_id}))  # this run refused
    assert await asyncio.wait_for(completing, 5) is False
    run = await app.get_run(handle.run_id)
    assert run is not None and run.status == "queued" and run.result is None
    pending = await store.client.xpending(
        store.keys.queue("early").stream, "stackshift"
    )
    assert pending["pending"] == 1  # left for a reclaimer


async def test_entries_that_do_not_carry_their_run_are_not_started_early(
    app: Stackshift,
) -> None:
    store = app.store
    await store.ensure_group("early")
    stream = store.keys.queue("early").stream
    run_id = (await app.queue("early").enqueue("job", {}, delay=60)).run_id
    await store.client.xadd(stream, {"r": run_id})  # as promote/release/redrive
    await store.client.xadd(stream, {"r": "nonsense", "j": "job", "p": "{}"})
    entries = await store.read("early", "w1", 10, 100)
    assert len(entries) == 2
    assert [store.early_start(e, "w1") for e in entries] == [None, None]


async def test_a_run_whose_record_vanished_is_buried_not_run_to_a_record(
    app: Stackshift,
) -> None:
    @app.job("orphan")
    async def orphan(ctx: JobContext[Any]) -> str:
        return "should not be recorded"

    handle = await app.queue().enqueue("orphan", {})
    # A queued run has no record yet, only its place in the queue's index.
    q = app.store.keys.queue("default")
    assert await app.store.client.hdel(*q.queued_index(handle.run_id)) == 1
    async with running_worker(app):
        await wait_until(lambda: app.dead_letters("default"), message="a dead letter")
    (buried,) = await app.dead_letters("default")
    assert buried.error is not None
    assert buried.error.type == "UndecodableEntryError"
    assert handle.run_id in buried.error.message
    # The early-started attempt's completion was refused: no record came back.
    assert await app.get_run(handle.run_id) is None


async def test_a_shutdown_during_a_start_frees_the_slots_and_settles_early_runs(
    app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stackshift.worker.dispatch import Dispatcher
    from stackshift.worker.slots import Slots

    store = app.store
    await store.ensure_group("early")
    stream = store.keys.queue("early").stream
    fresh = await app.queue("early").enqueue("job", {"n": 1})  # carries its run
    later = await app.queue("early").enqueue("job", {}, delay=60)
    await store.client.xadd(stream, {"r": later.run_id})  # as a promotion would
    entries = await store.read("early", "w1", 10, 100)
    assert [e.run_id for e in entries] == [fresh.run_id, later.run_id]

    entered, release = asyncio.Event(), asyncio.Event()
    start_many = store.start_many

    async def slow_start_many(*args: Any) -> Any:
        entered.set()
        await release.wait()
        return await start_many(*args)

    monkeypatch.setattr(store, "start_many", slow_start_many)
    slots = Slots(10)
    slots.take(len(entries))
    spawned: list[Any] = []
    refused: list[Any] = []
    dispatcher = Dispatcher(store, "w1", slots, spawned.append, refused.append)
    dispatching = asyncio.ensure_future(dispatcher.dispatch(entries, fresh=True))
    await asyncio.wait_for(entered.wait(), 5)
    dispatching.cancel()  # the worker shuts down while start.lua is in flight
    with pytest.raises(asyncio.CancelledError):
        await dispatching
    # The entry that was not started early gave its slot back; the early run
    # holds its own until it ends.
    assert slots.free == 9 and [s.lease.run_id for s in spawned] == [fresh.run_id]
    release.set()
    lease = spawned[0].lease
    # Settled by the reply that came after the cancel: it may run.
    assert await asyncio.wait_for(confirmed(lease), 5) is True
    assert may_run(lease) is True and refused == []


async def test_one_gate_per_batch_stops_only_the_runs_start_lua_refuses(
    app: Stackshift,
) -> None:
    """The runs of a batch started early share one gate. One whose entry was
    taken over by another worker between the read and start.lua is refused
    (stopped, writes nothing); the others go on."""
    from stackshift.worker.dispatch import Dispatcher
    from stackshift.worker.slots import Slots

    store = app.store
    await store.ensure_group("early")
    stream = store.keys.queue("early").stream
    handles = [await app.queue("early").enqueue("job", {"n": n}) for n in range(3)]
    entries = await store.read("early", "w1", 10, 100)
    assert len(entries) == 3
    # Another worker takes the second entry over before w1's start.lua runs.
    await store.client.xclaim(stream, "stackshift", "w2", 0, [entries[1].entry_id])

    slots = Slots(10)
    slots.take(len(entries))
    spawned: list[StartResult] = []
    refused: list[Lease] = []
    dispatcher = Dispatcher(store, "w1", slots, spawned.append, refused.append)
    await dispatcher.dispatch(entries, fresh=True)

    leases = [s.lease for s in spawned]
    assert [lease.run_id for lease in leases if lease] == [h.run_id for h in handles]
    gates = {id(lease.ready) for lease in leases if lease}
    assert len(gates) == 1  # one future for the batch, not one per run
    assert [may_run(lease) for lease in leases if lease] == [True, False, True]
    assert [lease.run_id for lease in refused] == [handles[1].run_id]
    # The refused run's write is refused too: nothing lands for it.
    assert await complete(store, leases[1], b'"x"') is False  # type: ignore[arg-type]
    assert await complete(store, leases[0], b'"ok"') is True  # type: ignore[arg-type]
    first = await app.get_run(handles[0].run_id)
    assert first is not None and first.status == "completed"
