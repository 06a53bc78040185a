"""The engine's semantics, in-process, on a real Redis (DESIGN §1 and §4)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import structlog

from stackshift import (
    InvalidNameError,
    JobContext,
    JobFailed,
    NonRetriableError,
    PayloadError,
    Stackshift,
)
from stackshift.worker.lane import BLOCK_MS
from tests.support.waiting import wait_until
from tests.support.workers import running_worker


class Payment(msgspec.Struct, rename="camel", frozen=True):
    payment_id: str
    customer_id: str


class Verified(msgspec.Struct, frozen=True):
    status: str
    at: datetime


@dataclasses.dataclass(frozen=True)
class Receipt:
    number: int
    lines: tuple[str, ...]


calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def reset_calls() -> None:
    calls.clear()


async def verify_payment(payment_id: str) -> Verified:
    calls["verify"] += 1
    return Verified("paid", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def issue_receipt(
    number: int, *, lines: list[str]
) -> Receipt:  # sync: runs in a thread
    calls["receipt"] += 1
    return Receipt(number, tuple(lines))


async def test_a_run_completes_with_its_result_and_record(app: Stackshift) -> None:
    @app.job("hello")
    async def hello(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
        return {"hi": ctx.payload["name"], "attempt": ctx.attempt, "job": ctx.job}

    async with running_worker(app, ["greet"]):
        handle = await app.queue("greet").enqueue("hello", {"name": "ada"})
        assert await handle.result(timeout=10) == {
            "hi": "ada",
            "attempt": 1,
            "job": "hello",
        }
    run = await app.get_run(handle.run_id)
    assert run is not None
    assert (run.job, run.queue, run.status, run.attempt) == (
        "hello",
        "greet",
        "completed",
        1,
    )
    assert run.payload == {"name": "ada"} and run.error is None
    assert run.correlation_id == handle.run_id  # its own id when none is given
    assert run.created_at and run.started_at and run.finished_at
    assert run.created_at <= run.started_at <= run.finished_at


async def test_recorded_steps_are_replayed_typed_and_not_run_again(
    app: Stackshift,
) -> None:
    seen: list[tuple[int, Any, Any]] = []

    @app.job("pay", backoff=0.01)
    async def pay(ctx: JobContext[Payment]) -> str:
        verified = await ctx.step.run(
            "verify-payment", verify_payment, ctx.payload.payment_id
        )
        receipt = await ctx.step.run("receipt", issue_receipt, 7, lines=["a", "b"])
        seen.append((ctx.attempt, verified, receipt))
        if ctx.attempt == 1:
            raise RuntimeError("downstream hiccup")
        return verified.status

    async with running_worker(app, ["pay"]):
        handle = await app.queue("pay").enqueue("pay", Payment("p_1", "c_1"))
        assert await handle.result(timeout=10) == "paid"
    assert calls == {"verify": 1, "receipt": 1}
    (a1, v1, r1), (a2, v2, r2) = seen
    assert (a1, a2) == (1, 2)
    assert v1 == v2 and type(v2) is Verified and v2.at.tzinfo is not None
    assert r1 == r2 == Receipt(7, ("a", "b")) and type(r2) is Receipt
    run = await app.get_run(handle.run_id)
    assert run is not None and run.attempt == 2
    assert [(s.step_id, s.attempt) for s in run.steps] == [
        ("verify-payment", 1),
        ("receipt", 1),
    ]


async def test_a_step_id_used_in_a_loop_gets_a_sequence_suffix(app: Stackshift) -> None:
    @app.job("loop", backoff=0.01)
    async def loop(ctx: JobContext[Any]) -> list[int]:
        out = [
            await ctx.step.run("square", lambda i=i: (calls.update(["sq"]), i * i)[1])
            for i in range(3)
        ]
        if ctx.attempt == 1:
            raise RuntimeError("again")
        return out

    async with running_worker(app):
        handle = await app.queue().enqueue("loop")
        assert await handle.result(timeout=10) == [0, 1, 4]
    assert calls["sq"] == 3
    run = await app.get_run(handle.run_id)
    assert run is not None
    assert [s.step_id for s in run.steps] == ["square", "square#2", "square#3"]


async def test_returns_gives_the_type_when_fn_has_no_annotation(
    app: Stackshift,
) -> None:
    @app.job("typed", backoff=0.01)
    async def typed(ctx: JobContext[Any]) -> bool:
        value = await ctx.step.run(
            "make", lambda: {"paymentId": "p", "customerId": "c"}, returns=Payment
        )
        if ctx.attempt == 1:
            raise RuntimeError("again")
        return isinstance(value, Payment)

    async with running_worker(app):
        assert await (await app.queue().enqueue("typed")).result(timeout=10) is True


async def test_counters_are_exact_across_retries(app: Stackshift) -> None:
    @app.job("count", backoff=0.01)
    async def count(ctx: JobContext[Any]) -> int:
        for batch in ([1, 2], [3, 4, 5], [6]):
            await ctx.state.increment("rows:f_1", len(batch))
            if ctx.attempt < 3 and len(batch) == 3:
                raise RuntimeError("import failed mid-way")  # after 2 increments
        return ctx.attempt

    async with running_worker(app):
        handle = await app.queue().enqueue("count")
        assert await handle.result(timeout=10) == 3
    assert await app.state.get("rows:f_1") == 6
    assert await app.state.get("never-touched") == 0


async def test_counter_keys_with_unsafe_characters_are_hashed_but_work(
    app: Stackshift,
) -> None:
    @app.job("count")
    async def count(ctx: JobContext[Any]) -> int:
        return await ctx.state.increment("files {weird} key*", 5)

    async with running_worker(app):
        assert await (await app.queue().enqueue("count")).result(timeout=10) == 5
    assert await app.state.get("files {weird} key*") == 5


async def test_retries_are_exhausted_then_the_run_is_dead_lettered(
    app: Stackshift,
) -> None:
    @app.job("flaky", retries=2, backoff=0.01)
    async def flaky(ctx: JobContext[Any]) -> None:
        calls["flaky"] += 1
        raise ValueError(f"broken on attempt {ctx.attempt}")

    async with running_worker(app):
        handle = await app.queue().enqueue("flaky")
        with pytest.raises(JobFailed) as failed:
            await handle.result(timeout=10)
    assert calls["flaky"] == 3
    assert failed.value.run_id == handle.run_id
    assert (failed.value.error_type, failed.value.message) == (
        "ValueError",
        "broken on attempt 3",
    )
    run = await app.get_run(handle.run_id)
    assert run is not None and run.status == "failed" and run.attempt == 3
    assert run.error is not None and "Traceback" in run.error.traceback
    assert [r.run_id for r in await app.dead_letters()] == [handle.run_id]


async def test_a_dead_run_can_be_redriven_and_resumes_after_its_steps(
    app: Stackshift,
) -> None:
    broken = {"yes": True}

    @app.job("two-steps", retries=0)
    async def two_steps(ctx: JobContext[Any]) -> str:
        await ctx.step.run("first", lambda: calls.update(["first"]))
        if broken["yes"]:
            raise RuntimeError("second step's service is down")
        return "done"

    async with running_worker(app):
        handle = await app.queue().enqueue("two-steps")
        with pytest.raises(JobFailed):
            await handle.result(timeout=10)
        broken["yes"] = False
        again = await app.retry(handle.run_id)
        assert again.run_id == handle.run_id
        assert await again.result(timeout=10) == "done"
    assert calls["first"] == 1
    assert await app.dead_letters() == []


async def test_non_retriable_errors_fail_at_once(app: Stackshift) -> None:
    @app.job("refuse", retries=5)
    async def refuse(ctx: JobContext[Any]) -> None:
        calls["refuse"] += 1
        raise NonRetriableError("card declined")

    async with running_worker(app):
        with pytest.raises(JobFailed, match="card declined"):
            await (await app.queue().enqueue("refuse")).result(timeout=10)
    assert calls["refuse"] == 1


async def test_an_attempt_past_its_timeout_fails_and_is_retried(
    app: Stackshift,
) -> None:
    @app.job("slow", timeout=0.2, retries=1, backoff=0.01)
    async def slow(ctx: JobContext[Any]) -> None:
        calls["slow"] += 1
        await asyncio.Event().wait()  # never returns

    async with running_worker(app):
        with pytest.raises(JobFailed) as failed:
            await (await app.queue().enqueue("slow")).result(timeout=10)
    assert failed.value.error_type == "JobTimeoutError"
    assert calls["slow"] == 2


async def test_a_jobs_own_timeout_error_is_an_ordinary_failure(app: Stackshift) -> None:
    @app.job("own", timeout=30, retries=1, backoff=0.01)
    async def own(ctx: JobContext[Any]) -> None:
        calls["own"] += 1
        async with asyncio.timeout(0.01):  # the job's own deadline, not the run's
            await asyncio.Event().wait()

    async with running_worker(app):
        with pytest.raises(JobFailed) as failed:
            await (await app.queue().enqueue("own")).result(timeout=10)
    assert failed.value.error_type == "TimeoutError"
    assert calls["own"] == 2  # retried like any failure


async def test_a_handler_that_cleans_up_after_its_timeout_still_times_out(
    app: Stackshift,
) -> None:
    cleaned: list[int] = []

    @app.job("tidy", timeout=0.2, retries=0)
    async def tidy(ctx: JobContext[Any]) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that awaits, then the cancel goes on
            cleaned.append(ctx.attempt)

    @app.job("echo")
    async def echo(ctx: JobContext[int]) -> int:
        return ctx.payload

    async with running_worker(app):
        handle = await app.queue().enqueue("tidy")
        with pytest.raises(JobFailed) as failed:
            await handle.result(timeout=10)
        # The worker is unharmed: the next run completes.
        assert await (await app.queue().enqueue("echo", 5)).result(timeout=10) == 5
    assert failed.value.error_type == "JobTimeoutError"
    assert cleaned == [1]


async def test_a_payload_that_fails_validation_fails_without_retries(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    @app.job("pay", retries=3)
    async def pay(ctx: JobContext[Payment]) -> None:
        calls["pay"] += 1

    # The enqueuing process does not know the job's type: the worker validates.
    async with Stackshift(redis_url, prefix=prefix) as client, running_worker(app):
        handle = await client.queue().enqueue("pay", {"paymentId": 5})
        with pytest.raises(JobFailed) as failed:
            await handle.result(timeout=10)
    assert failed.value.error_type == "PayloadError"
    assert "Expected `str`, got `int`" in failed.value.message
    assert calls["pay"] == 0


async def test_enqueue_validates_when_the_job_type_is_known(app: Stackshift) -> None:
    @app.job("pay")
    async def pay(ctx: JobContext[Payment]) -> None: ...

    with pytest.raises(PayloadError, match="invalid payload for job 'pay'"):
        await app.queue().enqueue("pay", {"paymentId": "p"})  # customerId missing
    handle = await app.queue().enqueue("pay", {"paymentId": "p", "customerId": "c"})
    run = await app.get_run(handle.run_id)
    assert run is not None and run.payload == {"paymentId": "p", "customerId": "c"}


async def test_bad_input_is_refused_before_anything_is_written(app: Stackshift) -> None:
    queue = app.queue("q")
    with pytest.raises(PayloadError, match="limit is 524288"):
        await queue.enqueue("job", {"blob": "x" * 600_000})
    with pytest.raises(PayloadError, match="not JSON"):
        await queue.enqueue("job", {"when": object()})
    with pytest.raises(InvalidNameError):
        await queue.enqueue("bad job", {})
    with pytest.raises(InvalidNameError):
        app.queue("bad queue")
    with pytest.raises(InvalidNameError):
        await queue.enqueue("job", {}, idempotency_key="")
    assert await app.store.client.keys(f"{app.settings.prefix}*") == []


async def test_unknown_jobs_are_dead_lettered_and_others_go_on(app: Stackshift) -> None:
    @app.job("known")
    async def known(ctx: JobContext[Any]) -> str:
        return "ok"

    async with running_worker(app):
        unknown = await app.queue().enqueue("nobodyHome", {})
        fine = await app.queue().enqueue("known", {})
        with pytest.raises(JobFailed) as failed:
            await unknown.result(timeout=10)
        assert await fine.result(timeout=10) == "ok"
    assert failed.value.error_type == "UnknownJobError"
    assert "no job named 'nobodyHome'" in failed.value.message


async def test_fifty_concurrent_enqueues_with_one_key_make_one_run(
    app: Stackshift,
) -> None:
    queue = app.queue("emails")
    handles = await asyncio.gather(
        *(
            queue.enqueue("send", {"n": i}, idempotency_key="verify:user_123")
            for i in range(50)
        )
    )
    assert len({h.run_id for h in handles}) == 1
    assert sorted(h.deduplicated for h in handles) == [False] + [True] * 49
    stream = app.store.keys.queue("emails").stream
    assert await app.store.client.xlen(stream) == 1


async def test_an_idempotency_key_holds_after_the_run_finished(app: Stackshift) -> None:
    @app.job("send")
    async def send(ctx: JobContext[Any]) -> int:
        calls["send"] += 1
        return calls["send"]

    async with running_worker(app, ["emails"]):
        first = await app.queue("emails").enqueue("send", {}, idempotency_key="k")
        assert await first.result(timeout=10) == 1
        second = await app.queue("emails").enqueue("send", {}, idempotency_key="k")
        assert second.deduplicated and second.run_id == first.run_id
        assert await second.result(timeout=10) == 1
        other_queue = await app.queue("other").enqueue("send", {}, idempotency_key="k")
        assert not other_queue.deduplicated  # keys are per queue
    assert calls["send"] == 1


async def test_idempotency_keys_expire_after_their_ttl(
    redis_url: str, prefix: str
) -> None:
    async with Stackshift(redis_url, prefix=prefix, idempotency_ttl=0.2) as app:
        first = await app.queue().enqueue("send", {}, idempotency_key="k")
        ttl_ms = await app.store.client.pttl(app.store.keys.queue("default").idem("k"))
        assert 0 < ttl_ms <= 200
        idem_key = app.store.keys.queue("default").idem("k")

        async def expired() -> bool:
            return await app.store.client.exists(idem_key) == 0

        await wait_until(expired, message="the idempotency key to expire")
        second = await app.queue().enqueue("send", {}, idempotency_key="k")
        assert not second.deduplicated and second.run_id != first.run_id


async def test_enqueue_many_makes_every_run_in_batches(app: Stackshift) -> None:
    @app.job("double")
    async def double(ctx: JobContext[dict[str, int]]) -> int:
        return ctx.payload["n"] * 2

    handles = await app.queue().enqueue_many(
        "double", ({"n": i} for i in range(250)), batch_size=100
    )
    assert len({h.run_id for h in handles}) == 250
    async with running_worker(app, concurrency=50):
        results = [await h.result(timeout=20) for h in handles]
    assert results == [i * 2 for i in range(250)]


async def test_a_bulk_enqueue_keeps_order_and_is_safe_to_repeat(
    app: Stackshift,
) -> None:
    # 450 runs go as 200 + 200 + 50 per script call; sending the same batch
    # again (as after a reply lost on the wire) finds the runs and adds none.
    from stackshift.store import EnqueueRequest
    from stackshift.store.keys import new_run_id

    reqs = [
        EnqueueRequest(new_run_id("bulk"), "job", b'{"n":%d}' % i) for i in range(450)
    ]
    first = await app.store.enqueue_many("bulk", reqs)
    again = await app.store.enqueue_many("bulk", reqs)
    assert (
        [r.run_id for r in first]
        == [r.run_id for r in again]
        == [r.run_id for r in reqs]
    )
    assert not any(r.deduplicated for r in first + again)
    stream = app.store.keys.queue("bulk").stream
    entries = await app.store.client.xrange(stream)
    assert [e[1][b"r"].decode() for e in entries] == [r.run_id for r in reqs]
    stats = await app.store.queue_stats("bulk")
    assert stats.waiting == 450


async def test_delayed_runs_wait_in_the_delayed_set(app: Stackshift) -> None:
    @app.job("later")
    async def later(ctx: JobContext[Any]) -> str:
        return "now"

    async with running_worker(app):
        handle = await app.queue().enqueue("later", delay=timedelta(milliseconds=400))
        run = await app.get_run(handle.run_id)
        assert run is not None and run.status == "scheduled"
        assert await handle.result(timeout=10) == "now"
    run = await app.get_run(handle.run_id)
    assert run is not None and run.started_at and run.created_at
    assert run.started_at - run.created_at >= timedelta(milliseconds=400)


async def test_run_at_in_the_past_runs_at_once(app: Stackshift) -> None:
    @app.job("later")
    async def later(ctx: JobContext[Any]) -> str:
        return "ran"

    async with running_worker(app):
        past = datetime.now(UTC) - timedelta(hours=1)
        assert (
            await (await app.queue().enqueue("later", run_at=past)).result(timeout=10)
            == "ran"
        )


async def test_correlation_ids_are_given_kept_and_inherited(app: Stackshift) -> None:
    @app.job("parent")
    async def parent(ctx: JobContext[Any]) -> str:
        child = await app.queue().enqueue("child", {})
        return child.run_id

    @app.job("child")
    async def child(ctx: JobContext[Any]) -> str:
        return ctx.correlation_id

    async with running_worker(app):
        handle = await app.queue().enqueue("parent", {}, correlation_id="req-42")
        child_id = await handle.result(timeout=10)
        assert await app.handle(child_id).result(timeout=10) == "req-42"
    for run_id in (handle.run_id, child_id):
        run = await app.get_run(run_id)
        assert run is not None and run.correlation_id == "req-42"


async def test_a_web_requests_bound_correlation_id_is_inherited(
    app: Stackshift,
) -> None:
    with structlog.contextvars.bound_contextvars(correlation_id="web-7"):
        handle = await app.queue().enqueue("any", {})
    run = await app.get_run(handle.run_id)
    assert run is not None and run.correlation_id == "web-7"


async def test_every_log_line_of_a_run_carries_its_identity(app: Stackshift) -> None:
    @app.job("chatty")
    async def chatty(ctx: JobContext[Any]) -> None:
        ctx.log.info("working_on_it")
        await ctx.step.run("s", lambda: 1)

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        async with running_worker(app):
            handle = await app.queue().enqueue("chatty", {}, correlation_id="c-1")
            await handle.result(timeout=10)
    # Lines logged while the run executes (the enqueuing client's line is not one).
    run_lines = [
        line
        for line in logs
        if line.get("run_id") == handle.run_id and line["event"] != "run_enqueued"
    ]
    events = {line["event"] for line in run_lines}
    assert {"working_on_it", "run_finished"} <= events
    for line in run_lines:
        assert (line["job"], line["queue"], line["attempt"], line["correlation_id"]) == (
            "chatty", "default", 1, "c-1",
        )  # fmt: skip
    (finished,) = [line for line in run_lines if line["event"] == "run_finished"]
    assert finished["outcome"] == "completed" and finished["duration_ms"] >= 0


async def test_result_times_out_while_the_run_waits(app: Stackshift) -> None:
    handle = await app.queue("nobody-serves-this").enqueue("job", {})
    with pytest.raises(TimeoutError):
        await handle.result(timeout=0.2)


async def test_finished_runs_expire_after_the_retention_ttl(
    redis_url: str, prefix: str
) -> None:
    async with Stackshift(redis_url, prefix=prefix, result_ttl=60) as app:

        @app.job("step")
        async def step(ctx: JobContext[Any]) -> None:
            await ctx.step.run("s", lambda: 1)

        async with running_worker(app):
            handle = await app.queue().enqueue("step", {})
            await handle.result(timeout=10)
        q = app.store.keys.queue("default")
        for key in (q.run(handle.run_id), q.steps(handle.run_id)):
            assert 0 < await app.store.client.ttl(key) <= 60
        # The acknowledged entry left the stream.
        assert await app.store.client.xlen(q.stream) == 0


async def test_a_burst_worker_stops_once_its_queues_are_empty(app: Stackshift) -> None:
    @app.job("quick")
    async def quick(ctx: JobContext[Any]) -> None:
        calls["quick"] += 1

    await app.queue().enqueue_many("quick", [{}] * 20)
    await app.queue().enqueue("quick", delay=0.3)
    worker = app.worker(["default"], burst=True, concurrency=5)
    await asyncio.wait_for(worker.run(), timeout=20)  # returns by itself
    assert calls["quick"] == 21


async def test_a_burst_worker_exits_soon_after_its_last_run(app: Stackshift) -> None:
    # Not a speed test: a burst worker used to block on its read for another
    # 2 s (BLOCK_MS) after the queue ran dry before it noticed.
    finished: list[float] = []

    @app.job("last")
    async def last(ctx: JobContext[Any]) -> None:
        finished.append(time.monotonic())

    await app.queue().enqueue("last")
    worker = app.worker(["default"], burst=True)
    await asyncio.wait_for(worker.run(), timeout=20)
    assert len(finished) == 1
    assert time.monotonic() - finished[0] < BLOCK_MS / 1000 * 0.75


async def test_stop_lets_in_flight_runs_finish_within_the_grace_period(
    app: Stackshift,
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    @app.job("wait")
    async def wait(ctx: JobContext[Any]) -> str:
        started.set()
        await release.wait()
        return "finished"

    async with running_worker(app, grace_period=10) as worker:
        handle = await app.queue().enqueue("wait", {})
        await asyncio.wait_for(started.wait(), 10)
        worker.stop()
        release.set()
    run = await app.get_run(handle.run_id)
    assert run is not None and run.status == "completed" and run.result == "finished"


async def test_runs_past_the_grace_period_are_handed_back_and_resume(
    app: Stackshift,
) -> None:
    started = asyncio.Event()

    @app.job("long")
    async def long(ctx: JobContext[Any]) -> str:
        await ctx.step.run("first", lambda: calls.update(["first"]))
        started.set()
        if ctx.attempt == 1:
            await asyncio.Event().wait()  # outlives the grace period
        return "resumed"

    async with running_worker(app, grace_period=0.2) as worker:
        handle = await app.queue().enqueue("long", {})
        await asyncio.wait_for(started.wait(), 10)
        worker.stop()
    run = await app.get_run(handle.run_id)
    assert run is not None and run.status == "queued"
    async with running_worker(app):
        assert await handle.result(timeout=10) == "resumed"
    assert calls["first"] == 1
    consumers = await app.store.client.xinfo_consumers(
        app.store.keys.queue("default").stream, "stackshift"
    )
    assert all(c["pending"] == 0 for c in consumers)


async def test_the_memory_backend_runs_the_same_engine() -> None:
    from stackshift.store.memory import reset_memory

    reset_memory("engine-test")
    async with Stackshift("memory://engine-test") as app:

        @app.job("count", backoff=0.01)
        async def count(ctx: JobContext[Any]) -> int:
            await ctx.step.run("once", lambda: calls.update(["once"]))
            await ctx.state.increment("n", 2)
            if ctx.attempt == 1:
                raise RuntimeError("retry me")
            return ctx.attempt

        async with running_worker(app):
            first = await app.queue().enqueue("count", {}, idempotency_key="k")
            again = await app.queue().enqueue("count", {}, idempotency_key="k")
            assert again.deduplicated and again.run_id == first.run_id
            assert await first.result(timeout=10) == 2
        assert calls["once"] == 1
        assert await app.state.get("n") == 2


async def test_increments_inside_a_replayed_step_keep_later_ones_exact(
    app: Stackshift,
) -> None:
    """A replayed step skips its function, and with it the increments made
    inside; the increments after it must still count once each."""

    @app.job("inside", backoff=0.01)
    async def inside(ctx: JobContext[Any]) -> int:
        async def count_rows() -> int:
            return await ctx.state.increment("rows", 10)

        await ctx.step.run("import", count_rows)
        await ctx.state.increment("rows", 1)
        if ctx.attempt == 1:
            raise RuntimeError("fail after both increments")
        await ctx.state.increment("rows", 100)
        return ctx.attempt

    async with running_worker(app):
        assert await (await app.queue().enqueue("inside", {})).result(timeout=10) == 2
    assert await app.state.get("rows") == 111
