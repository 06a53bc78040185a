"""Events (issue 11, DESIGN §2) on a real Redis: ``send_event``, jobs made by
events (``on_event``) and runs waiting for one (``step.wait_for_event``).

Redelivery, fan-out to many waiters, the lookback race, and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from stackshift import (
    InvalidNameError,
    JobContext,
    PayloadError,
    ReceivedEvent,
    Stackshift,
)
from tests.support.processes import wait_status
from tests.support.waiting import wait_until
from tests.support.workers import running_worker

QUEUE = "ev"


async def events_routed(app: Stackshift) -> bool:
    """Every event sent so far was routed and left the routing stream."""
    client = app.store.client
    stream = app.store.keys.event_stream
    if not await client.exists(stream):
        return True
    if await client.xlen(stream):
        return False
    groups = await client.xinfo_groups(stream)
    return all(int(g["pending"]) == 0 for g in groups)


async def server_ms(app: Stackshift) -> int:
    seconds, micros = await app.store.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def register_order_jobs(app: Stackshift, ran: Counter[str]) -> None:
    """Two jobs subscribed to ``order.paid``, and a job that waits for one."""

    @app.job("ship", on_event="order.paid", queue=QUEUE)
    async def ship(ctx: JobContext[dict[str, Any]]) -> str:
        ran[f"ship:{ctx.payload['orderId']}"] += 1
        return "shipped"

    @app.job("bill", on_event=("order.paid", "order.refunded"), queue=QUEUE)
    async def bill(ctx: JobContext[dict[str, Any]]) -> str:
        ran[f"bill:{ctx.payload['orderId']}"] += 1
        return "billed"

    @app.job("await-payment", queue=QUEUE)
    async def await_payment(ctx: JobContext[dict[str, Any]]) -> Any:
        data = await ctx.step.wait_for_event(
            "paid",
            event="order.paid",
            match={"orderId": ctx.payload["orderId"]},
            timeout=timedelta(minutes=5),
        )
        ran[f"waiter:{ctx.run_id}"] += 1  # once per resumed attempt
        return data


async def subscriber_runs(app: Stackshift) -> list[tuple[str, Any]]:
    """(job, payload) of every run the events made on QUEUE (its completed set)."""
    client = app.store.client
    ids = await client.zrange(app.store.keys.queue(QUEUE).completed, 0, -1)
    runs = [await app.get_run(i.decode()) for i in ids]
    return [
        (r.job, r.payload) for r in runs if r is not None and r.job != "await-payment"
    ]


# --- fan-out and redelivery ----------------------------------------------------


async def test_an_event_makes_one_run_of_each_subscribed_job_with_its_data(
    app: Stackshift,
) -> None:
    ran: Counter[str] = Counter()
    register_order_jobs(app, ran)
    async with running_worker(app, [QUEUE]):
        receipt = await app.send_event(
            "order.paid", {"orderId": "o1"}, id="evt-1", correlation_id="req-9"
        )
        assert (receipt.id, receipt.duplicate) == ("evt-1", False)
        await wait_until(
            lambda: ran["ship:o1"] and ran["bill:o1"], message="both subscribers"
        )
        await wait_until(lambda: events_routed(app), message="the event routed")
    made = await subscriber_runs(app)
    assert sorted(made) == [("bill", {"orderId": "o1"}), ("ship", {"orderId": "o1"})]
    ids = await app.store.client.zrange(app.store.keys.queue(QUEUE).completed, 0, -1)
    for run_id in ids:
        run = await app.get_run(run_id.decode())
        assert run is not None and run.correlation_id == "req-9"


async def test_sending_an_event_id_again_is_a_no_op_that_says_so(
    app: Stackshift,
) -> None:
    ran: Counter[str] = Counter()
    register_order_jobs(app, ran)
    first = await app.send_event("order.paid", {"orderId": "o2"}, id="evt-2")
    again = await app.send_event("order.paid", {"orderId": "o2"}, id="evt-2")
    other_name = await app.send_event("order.refunded", {"orderId": "o2"}, id="evt-2")
    assert (first.duplicate, again.duplicate, other_name.duplicate) == (
        False,
        True,
        False,  # dedupe is per (name, id)
    )
    assert await app.store.client.xlen(app.store.keys.event_stream) == 2
    async with running_worker(app, [QUEUE]):
        await wait_until(lambda: ran["bill:o2"] == 2, message="bill for both names")
        await wait_until(lambda: events_routed(app), message="events routed")
    assert ran == {"ship:o2": 1, "bill:o2": 2}


async def _capture_event_entry(app: Stackshift) -> dict[bytes, bytes]:
    (entry,) = await app.store.client.xrange(app.store.keys.event_stream)
    return dict(entry[1])


async def test_an_event_entry_added_twice_makes_one_run_per_job_and_resumes_once(
    app: Stackshift,
) -> None:
    """The same event (same name, id, data) reaches the routing stream twice:
    still one run per subscribed job, and each waiter resumed once."""
    ran: Counter[str] = Counter()
    register_order_jobs(app, ran)
    async with running_worker(app, [QUEUE]):
        waiter = await app.queue(QUEUE).enqueue("await-payment", {"orderId": "o3"})
        await wait_status(app, waiter.run_id, "suspended", within=10)
    # No router runs now: the event waits in the stream, where we copy it.
    await app.send_event("order.paid", {"orderId": "o3"}, id="evt-3")
    fields = await _capture_event_entry(app)
    async with running_worker(app, [QUEUE]):
        assert await waiter.result(timeout=10) == {"orderId": "o3"}
        await wait_until(lambda: events_routed(app), message="first delivery routed")
        # Redelivery: the very same event enters the routing stream again.
        await app.store.client.xadd(app.store.keys.event_stream, fields)
        await wait_until(lambda: events_routed(app), message="second delivery routed")
    assert ran == {"ship:o3": 1, "bill:o3": 1, f"waiter:{waiter.run_id}": 1}
    assert sorted(await subscriber_runs(app)) == [
        ("bill", {"orderId": "o3"}),
        ("ship", {"orderId": "o3"}),
    ]
    run = await app.get_run(waiter.run_id)
    assert run is not None and run.attempt == 1  # a suspension is not an attempt


async def test_an_event_routed_by_a_router_that_never_acked_is_routed_again_once(
    app: Stackshift, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router routes an event and dies before acknowledging it; another
    takes the entry over and routes it again: nothing is made or resumed twice."""
    ran: Counter[str] = Counter()
    register_order_jobs(app, ran)
    acks = 0

    async def never_acked(events: list[Any]) -> None:
        nonlocal acks
        acks += 1

    monkeypatch.setattr(app.store, "event_done", never_acked)
    async with running_worker(app, [QUEUE], lease_timeout=1.0):
        waiters = [
            await app.queue(QUEUE).enqueue("await-payment", {"orderId": f"o{i}"})
            for i in range(3)
        ]
        for w in waiters:
            await wait_status(app, w.run_id, "suspended", within=10)
        for i in range(3):
            await app.send_event("order.paid", {"orderId": f"o{i}"}, id=f"e-{i}")
        for w in waiters:
            await w.result(timeout=10)
        # Routed at least twice: by the first read, then by its own reclaims.
        await wait_until(lambda: acks >= 2, message="a second routing")
    assert not await events_routed(app)  # still pending: never acknowledged

    async with Stackshift(redis_url, prefix=prefix) as other:
        register_order_jobs(other, ran)
        async with running_worker(other, [QUEUE], lease_timeout=1.0):
            await wait_until(lambda: events_routed(other), message="taken over, acked")
    expected = {f"ship:o{i}": 1 for i in range(3)}
    expected |= {f"bill:o{i}": 1 for i in range(3)}
    expected |= {f"waiter:{w.run_id}": 1 for w in waiters}
    assert ran == expected
    for w in waiters:
        run = await app.get_run(w.run_id)
        assert run is not None and (run.status, run.attempt) == ("completed", 1)


# --- many waiters ----------------------------------------------------------------


async def test_a_thousand_waiters_are_each_resumed_once_by_their_own_event(
    app: Stackshift,
) -> None:
    resumed: Counter[int] = Counter()

    @app.job("await-ping", queue=QUEUE)
    async def await_ping(ctx: JobContext[dict[str, int]]) -> Any:
        data = await ctx.step.wait_for_event(
            "ping", event="ping", match={"k": ctx.payload["k"]}, timeout=120
        )
        resumed[ctx.payload["k"]] += 1
        return data

    n = 1000
    async with running_worker(app, [QUEUE], concurrency=50):
        handles = await app.queue(QUEUE).enqueue_many(
            "await-ping", [{"k": k} for k in range(n)]
        )

        async def all_suspended() -> bool:
            return (await app.store.queue_stats(QUEUE)).suspended == n

        await wait_until(all_suspended, timeout=60, message="every waiter suspended")
        # Sent all at once, in a shuffled order, each with its own data.
        order = list(range(n))
        order = order[1::2] + order[::2]
        sends = [
            app.send_event("ping", {"k": k, "secret": f"s{k}"}, id=f"p{k}")
            for k in order
        ]
        await asyncio.gather(*sends)
        results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert results == [{"k": k, "secret": f"s{k}"} for k in range(n)]
    assert resumed == dict.fromkeys(range(n), 1)
    stats = await app.store.queue_stats(QUEUE)
    assert stats.totals["completed"] == n and stats.suspended == 0


# --- the lookback race -------------------------------------------------------------


async def test_an_event_sent_right_after_enqueue_is_matched_every_time(
    any_app: Stackshift,
) -> None:
    """200 trials: the event is sent the moment its waiter's run is enqueued,
    before the run has started or registered its wait."""
    app = any_app

    @app.job("await-order", queue=QUEUE)
    async def await_order(ctx: JobContext[dict[str, int]]) -> Any:
        return await ctx.step.wait_for_event(
            "order", event="order.placed", match={"n": ctx.payload["n"]}, timeout=60
        )

    trials = 200
    attempts: Counter[int] = Counter()
    async with running_worker(app, [QUEUE], concurrency=20):
        for n in range(trials):
            handle = await app.queue(QUEUE).enqueue("await-order", {"n": n})
            await app.send_event("order.placed", {"n": n, "v": n * 7})
            assert await handle.result(timeout=3) == {"n": n, "v": n * 7}, n
            run = await app.get_run(handle.run_id)
            assert run is not None
            attempts[run.attempt] += 1
    # Found by looking back, or suspended and resumed by the router: either way
    # in its first attempt (a suspension is not an attempt).
    assert attempts == {1: trials}


async def test_an_event_routed_while_the_runs_start_is_slow_is_not_lost(
    any_app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early-start race made certain: the run's start (start.lua) is held
    back, as on a loaded server, while its handler has begun and an event for
    it is sent and routed. The run must still get the event."""
    app = any_app
    began = asyncio.Event()
    gate = asyncio.Event()
    start_many = app.store.start_many

    async def slow_start(*args: Any) -> Any:
        await gate.wait()
        return await start_many(*args)

    monkeypatch.setattr(app.store, "start_many", slow_start)

    @app.job("await-order", queue=QUEUE)
    async def await_order(ctx: JobContext[dict[str, int]]) -> Any:
        began.set()
        return await ctx.step.wait_for_event(
            "order", event="order.placed", match={"n": ctx.payload["n"]}, timeout=60
        )

    index = app.store.keys.events("order.placed").index
    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("await-order", {"n": 5})
        await wait_until(began.is_set, message="the handler to begin")
        # Where the wait registers before its run's start: let it (a fixed
        # engine may not register until the start is done, and go on).
        with contextlib.suppress(AssertionError):
            await wait_until(
                lambda: app.store.client.zcard(index), timeout=2, message="wait"
            )
        await app.send_event("order.placed", {"n": 5, "v": "five"})
        await wait_until(lambda: events_routed(app), message="the event routed")
        gate.set()
        assert await handle.result(timeout=3) == {"n": 5, "v": "five"}


async def test_an_event_routed_before_the_wait_is_matched_by_looking_back(
    app: Stackshift,
) -> None:
    """The event is routed (by a worker of another queue) before the waiting
    run even starts: its wait finds it in the name's recent events."""

    @app.job("await-order", queue=QUEUE)
    async def await_order(ctx: JobContext[dict[str, int]]) -> Any:
        return await ctx.step.wait_for_event(
            "order", event="order.placed", match={"n": ctx.payload["n"]}, timeout=60
        )

    handle = await app.queue(QUEUE).enqueue("await-order", {"n": 1})
    await app.send_event("order.placed", {"n": 1, "routed": "first"})
    async with running_worker(app, ["elsewhere"]):
        await wait_until(lambda: events_routed(app), message="the event routed")
    async with running_worker(app, [QUEUE]):
        assert await handle.result(timeout=10) == {"n": 1, "routed": "first"}
    run = await app.get_run(handle.run_id)
    assert run is not None and run.attempt == 1  # never suspended
    assert run.waiting_for == [] and run.status == "completed"


# --- what matches, and what does not ----------------------------------------------


async def test_a_wait_times_out_with_none(any_app: Stackshift) -> None:
    app = any_app

    @app.job("await-refund", queue=QUEUE)
    async def await_refund(ctx: JobContext[Any]) -> Any:
        refund = await ctx.step.wait_for_event(
            "refund", event="refund.issued", timeout=timedelta(milliseconds=300)
        )
        return {"refund": refund}

    async with running_worker(app, [QUEUE]):
        began = time.monotonic()
        handle = await app.queue(QUEUE).enqueue("await-refund", {})
        assert await handle.result(timeout=10) == {"refund": None}
        assert time.monotonic() - began >= 0.3
    run = await app.get_run(handle.run_id)
    assert run is not None
    assert [(s.step_id, s.result) for s in run.steps] == [("refund", None)]


async def test_waiting_for_several_names_says_which_event_came(
    any_app: Stackshift,
) -> None:
    app = any_app

    @app.job("await-decision", queue=QUEUE)
    async def await_decision(ctx: JobContext[Any]) -> Any:
        got = await ctx.step.wait_for_event(
            "decision",
            event=("refund.issued", "refund.denied"),
            match={"paymentId": "p1"},
            timeout=60,
        )
        assert isinstance(got, ReceivedEvent)
        return {"name": got.name, "data": got.data, "id": got.id}

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("await-decision", {})
        await wait_status(app, handle.run_id, "suspended", within=10)
        run = await app.get_run(handle.run_id)
        assert run is not None
        (wait,) = run.waiting_for
        assert (wait.step_id, wait.kind, wait.events, wait.match) == (
            "decision",
            "event",
            ["refund.issued", "refund.denied"],
            {"paymentId": "p1"},
        )
        await app.send_event(
            "refund.denied", {"paymentId": "p1", "why": "late"}, id="d1"
        )
        assert await handle.result(timeout=10) == {
            "name": "refund.denied",
            "data": {"paymentId": "p1", "why": "late"},
            "id": "d1",
        }
        # The other name's event, later, changes nothing.
        await app.send_event("refund.issued", {"paymentId": "p1"})
        await wait_until(lambda: events_routed(app), message="events routed")
    run = await app.get_run(handle.run_id)
    assert run is not None and (run.status, run.attempt) == ("completed", 1)


@pytest.mark.parametrize(
    "match",
    [{"paymentId": "p1", "region": "eu"}, {"region": None}],
    ids=["field-missing", "none-vs-missing"],
)
async def test_a_match_on_a_field_the_event_lacks_never_matches(
    any_app: Stackshift, match: dict[str, Any]
) -> None:
    app = any_app

    @app.job("await-match", queue=QUEUE)
    async def await_match(ctx: JobContext[Any]) -> Any:
        return await ctx.step.wait_for_event(
            "m", event="refund.issued", match=match, timeout=1.5
        )

    async with running_worker(app, [QUEUE]):
        early = await app.queue(QUEUE).enqueue("await-match", {})
        # One sent before the wait is registered (lookback), one after (router).
        await app.send_event("refund.issued", {"paymentId": "p1"})
        await wait_status(app, early.run_id, "suspended", within=10)
        await app.send_event("refund.issued", {"paymentId": "p1", "other": "eu"})
        assert await early.result(timeout=10) is None


async def test_match_compares_values_as_json(any_app: Stackshift) -> None:
    """1 and "1" differ, and so do 1 and true; equal values match."""
    app = any_app

    @app.job("await-typed", queue=QUEUE)
    async def await_typed(ctx: JobContext[Any]) -> Any:
        return await ctx.step.wait_for_event(
            "t", event="typed", match={"n": 1}, timeout=10
        )

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("await-typed", {})
        await wait_status(app, handle.run_id, "suspended", within=10)
        await app.send_event("typed", {"n": "1", "which": "string"})
        await app.send_event("typed", {"n": True, "which": "bool"})
        await app.send_event("typed", {"n": 1, "which": "int"})
        assert await handle.result(timeout=10) == {"n": 1, "which": "int"}


async def test_an_event_sent_before_the_run_was_made_does_not_match(
    app: Stackshift,
) -> None:
    @app.job("await-old", queue=QUEUE)
    async def await_old(ctx: JobContext[Any]) -> Any:
        return await ctx.step.wait_for_event(
            "old", event="order.shipped", match={"orderId": "o1"}, timeout=1
        )

    async with running_worker(app, [QUEUE]):
        await app.send_event("order.shipped", {"orderId": "o1"})
        sent = await server_ms(app)
        await wait_until(lambda: events_routed(app), message="the event routed")
        # Past the clock skew a wait allows for (step.py CLOCK_SKEW_MS, 1 s).
        await wait_until(
            lambda: _later_than(app, sent + 1100), timeout=5, message="time to pass"
        )
        handle = await app.queue(QUEUE).enqueue("await-old", {})
        assert await handle.result(timeout=10) is None


async def _later_than(app: Stackshift, ms: int) -> bool:
    return await server_ms(app) > ms


async def test_an_event_nobody_listens_to_is_routed_and_makes_nothing(
    any_app: Stackshift,
) -> None:
    app = any_app
    async with running_worker(app, [QUEUE]):
        receipt = await app.send_event("nobody.listens", {"x": 1})
        assert receipt.id.startswith("evt_") and not receipt.duplicate
        await wait_until(lambda: events_routed(app), message="routed")
    stats = await app.store.queue_stats(QUEUE)
    assert stats.totals.get("enqueued", 0) == 0


async def _keys_of(app: Stackshift, redis_url: str) -> list[bytes]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [k async for k in client.scan_iter(match=f"{app.settings.prefix}*")]
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (object(), "not JSON-serialisable"),
        ({(1, 2): "tuple keys"}, "not JSON-serialisable"),
        ({"blob": "x" * (512 * 1024)}, "the limit is"),
    ],
    ids=["object", "non-str-keys", "oversized"],
)
async def test_a_non_json_or_oversized_event_is_refused_and_writes_nothing(
    app: Stackshift, redis_url: str, data: Any, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        await app.send_event("order.paid", data, id="bad-1")
    assert await _keys_of(app, redis_url) == []
    # The id was not used up: the same id with good data is sent.
    assert not (await app.send_event("order.paid", {"ok": 1}, id="bad-1")).duplicate


@pytest.mark.parametrize(
    ("name", "event_id"),
    [("bad name", None), ("x" * 65, None), ("{events}", None), ("ok", "")],
)
async def test_bad_event_names_and_ids_are_refused(
    app: Stackshift, redis_url: str, name: str, event_id: str | None
) -> None:
    with pytest.raises(InvalidNameError):
        await app.send_event(name, {}, id=event_id)
    assert await _keys_of(app, redis_url) == []


async def test_a_long_or_odd_event_id_is_deduplicated_too(app: Stackshift) -> None:
    odd = "payment {1} * confirmed " + "z" * 300
    assert not (await app.send_event("order.paid", {}, id=odd)).duplicate
    assert (await app.send_event("order.paid", {}, id=odd)).duplicate
    assert not (await app.send_event("order.paid", {}, id=odd + "!")).duplicate


async def test_a_run_waiting_without_a_match_can_be_inspected(
    any_app: Stackshift,
) -> None:
    """get_run (stackshift show, the dashboard) of a run waiting for any event
    of a name, with no ``match``."""
    app = any_app

    @app.job("await-any", queue=QUEUE)
    async def await_any(ctx: JobContext[Any]) -> Any:
        return await ctx.step.wait_for_event("any", event="anything", timeout=60)

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("await-any", {})
        run = await wait_status(app, handle.run_id, "suspended", within=10)
        (wait,) = run.waiting_for
        assert (wait.kind, wait.events, wait.match or {}) == ("event", ["anything"], {})
        await app.send_event("anything", {"a": 1})
        assert await handle.result(timeout=10) == {"a": 1}


async def test_an_event_sent_from_a_job_carries_its_correlation_id(
    app: Stackshift,
) -> None:
    @app.job("notify", queue=QUEUE)
    async def notify(ctx: JobContext[Any]) -> str:
        receipt = await ctx.step.run(
            "send", lambda: app.send_event("user.notified", {"u": 1}, id="n-1")
        )
        return str(receipt)

    @app.job("audit", on_event="user.notified", queue=QUEUE)
    async def audit(ctx: JobContext[Any]) -> str:
        return ctx.correlation_id

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("notify", {}, correlation_id="req-5")
        await handle.result(timeout=10)

        async def audited() -> list[Any]:
            client = app.store.client
            ids = await client.zrange(app.store.keys.queue(QUEUE).completed, 0, -1)
            runs = [await app.get_run(i.decode()) for i in ids]
            return [r for r in runs if r is not None and r.job == "audit"]

        (run,) = await wait_until(audited, message="the audit run")
    assert run.correlation_id == "req-5" and run.result == "req-5"


async def _waiter_members(app: Stackshift, name: str, run_id: str) -> list[float]:
    """Expiry scores of ``run_id``'s registrations in ``name``'s waiter index."""
    k = app.store.keys.events(name)
    members = await app.store.client.zrange(k.expiry, 0, -1, withscores=True)
    return [score for m, score in members if run_id in m.decode()]


@pytest.mark.parametrize("how", ["cancelled", "other-name"])
async def test_a_waiter_that_no_longer_waits_leaves_the_index_in_time(
    app: Stackshift, how: str
) -> None:
    @app.job("await-either", queue=QUEUE)
    async def await_either(ctx: JobContext[Any]) -> Any:
        got = await ctx.step.wait_for_event(
            "either", event=("shipped", "lost"), match={"order": "o1"}
        )
        return got.name

    async with running_worker(app, [QUEUE]):
        handle = await app.queue(QUEUE).enqueue("await-either", {})
        await wait_status(app, handle.run_id, "suspended", within=10)
        assert await _waiter_members(app, "shipped", handle.run_id)
        if how == "cancelled":
            await app.cancel(handle.run_id)
        else:
            await app.send_event("lost", {"order": "o1"})
            assert await handle.result(timeout=10) == "lost"
    # Gone from the index, or at least due to leave it some day.
    for name in ("shipped", "lost"):
        scores = await _waiter_members(app, name, handle.run_id)
        assert all(score != float("inf") for score in scores), (name, scores)


async def test_a_job_no_longer_subscribed_gets_no_more_runs(
    redis_url: str, prefix: str
) -> None:
    async with Stackshift(redis_url, prefix=prefix) as old:

        @old.job("legacy", on_event="order.paid", queue=QUEUE)
        async def legacy(ctx: JobContext[Any]) -> None: ...

        async with running_worker(old, [QUEUE]):
            pass  # deployed once: it subscribed
    async with Stackshift(redis_url, prefix=prefix) as new:

        @new.job("legacy", queue=QUEUE)  # the next deploy: on_event removed
        async def legacy_now(ctx: JobContext[Any]) -> None: ...

        async with running_worker(new, [QUEUE]):
            await new.send_event("order.paid", {"orderId": "o9"})
            await wait_until(lambda: events_routed(new), message="routed")
        stats = await new.store.queue_stats(QUEUE)
        assert stats.totals.get("enqueued", 0) == 0, stats
