"""Everyday use (issue #12): one app object for every event loop and for sync
code, typed job handles, managing runs, and the testing kit."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from stackshift import (
    JobContext,
    JobFailed,
    RunInfo,
    RunStatus,
    Stackshift,
    StackshiftError,
)
from stackshift.store.memory import reset_memory
from tests.support.workers import running_worker


class Upload(msgspec.Struct, frozen=True):
    file_id: str


class Imported(msgspec.Struct, frozen=True):
    rows: int


def make_app(url: str, prefix: str) -> Stackshift:
    app = Stackshift(url, prefix=prefix)

    @app.job("echo")
    async def echo(ctx: JobContext[dict[str, Any]]) -> dict[str, Any]:
        return ctx.payload

    return app


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest, redis_url: str, prefix: str) -> str:
    if request.param == "memory":
        name = f"everyday-{uuid.uuid4().hex[:8]}"
        reset_memory(name)
        return f"memory://{name}"
    return redis_url


# --- one app, any number of event loops and threads ----------------------------


def test_a_module_level_app_serves_asyncio_run_twice(backend: str, prefix: str) -> None:
    """Two asyncio.run() calls with one app (a Flask/Django view, a script)
    each enqueue and get their result; the second does not find a closed loop."""
    app = make_app(backend, prefix)

    async def once(n: int) -> Any:
        async with running_worker(app, ["default"]):
            handle = await app.queue().enqueue("echo", {"n": n})
            return await handle.result(timeout=10)

    assert asyncio.run(once(1)) == {"n": 1}
    assert asyncio.run(once(2)) == {"n": 2}


def test_a_module_level_app_serves_two_threads_at_once(
    backend: str, prefix: str
) -> None:
    app = make_app(backend, prefix)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def in_thread(n: int) -> None:
        async def go() -> None:
            handle = await app.queue().enqueue("echo", {"n": n})
            results[n] = await handle.result(timeout=15)

        try:
            asyncio.run(go())
        except BaseException as exc:  # reported below
            errors.append(exc)

    async def serve() -> None:
        async with running_worker(app, ["default"]):
            threads = [threading.Thread(target=in_thread, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            await asyncio.to_thread(lambda: [t.join(30) for t in threads])

    asyncio.run(serve())
    assert not errors, errors
    assert results == {0: {"n": 0}, 1: {"n": 1}}


_shared: dict[str, Stackshift] = {}


@pytest.fixture
def shared_app(backend: str, prefix: str) -> Iterator[Stackshift]:
    """One app object for the two tests below, as a module-level app would be,
    while pytest gives each test an event loop of its own."""
    key = f"{backend}|{prefix}"
    _shared.setdefault(key, make_app(backend, prefix))
    yield _shared[key]


@pytest.mark.parametrize("n", [1, 2])
async def test_one_app_serves_pytests_per_test_loops(
    shared_app: Stackshift, n: int
) -> None:
    async with running_worker(shared_app, ["default"]):
        handle = await shared_app.queue().enqueue("echo", {"n": n})
        # Not 5 s: the result is announced, not polled for (memory:// too).
        assert await asyncio.wait_for(handle.result(timeout=5), 2) == {"n": n}


def test_sync_enqueue_and_result_from_code_without_a_loop(
    redis_url: str, prefix: str
) -> None:
    """What a Flask view does: enqueue_sync, then result_sync, no event loop."""
    app = make_app(redis_url, prefix)
    stop = threading.Event()

    def serve() -> None:
        async def go() -> None:
            async with running_worker(app, ["default"]):
                await asyncio.to_thread(stop.wait, 30)

        asyncio.run(go())

    server = threading.Thread(target=serve)
    server.start()
    try:
        handle = app.queue().enqueue_sync("echo", {"view": 1}, idempotency_key="v1")
        again = app.queue().enqueue_sync("echo", {"view": 1}, idempotency_key="v1")
        assert again.deduplicated and again.run_id == handle.run_id
        assert handle.result_sync(timeout=10) == {"view": 1}
        run = app.get_run_sync(handle.run_id)
        assert run is not None and run.status == RunStatus.COMPLETED
        many = app.queue().enqueue_many_sync("echo", [{"i": i} for i in range(3)])
        assert [h.result_sync(timeout=10) for h in many] == [{"i": i} for i in range(3)]
    finally:
        stop.set()
        server.join(30)
        app.close_sync()


async def test_the_sync_api_refuses_to_block_a_running_loop(app: Stackshift) -> None:
    with pytest.raises(StackshiftError, match="await"):
        app.queue().enqueue_sync("echo", {})


# --- typed job handles -------------------------------------------------------


async def test_a_job_handle_enqueues_on_its_queue_and_decodes_its_result(
    app: Stackshift,
) -> None:
    @app.job("import", queue="uploads")
    async def import_file(ctx: JobContext[Upload]) -> Imported:
        return Imported(rows=len(ctx.payload.file_id))

    async with running_worker(app, ["uploads"]):
        handle = await import_file.enqueue(Upload("f_123"))
        assert handle.queue == "uploads"
        assert await handle.result(timeout=10) == Imported(rows=5)
        # By name, with no handle: the job's return type is known here too.
        by_name = await app.queue("uploads").enqueue("import", {"file_id": "ab"})
        assert await by_name.result(timeout=10) == Imported(rows=2)
    with pytest.raises(Exception, match="invalid payload"):
        await import_file.enqueue({"file": "x"})  # type: ignore[arg-type]


async def test_a_job_awaiting_a_failed_run_is_retried(app: Stackshift) -> None:
    """JobFailed raised in job code is an ordinary failure: retried."""
    attempts: list[int] = []

    @app.job("fails", retries=0)
    async def fails(ctx: JobContext[Any]) -> None:
        raise ValueError("no")

    @app.job("waits_for_it", retries=1, backoff=0.01)
    async def waits(ctx: JobContext[Any]) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            other = await app.queue().enqueue("fails", {})
            await other.result(timeout=10)  # raises JobFailed
        return "second time"

    async with running_worker(app, ["default"]):
        handle = await app.queue().enqueue("waits_for_it", {})
        assert await handle.result(timeout=20) == "second time"
    assert attempts == [1, 2]


# --- managing runs ------------------------------------------------------------


async def test_runs_are_listed_newest_first_by_status_and_job(app: Stackshift) -> None:
    queue = app.queue("listed")
    first = await queue.enqueue_many("a", [{"n": n} for n in range(5)])
    second = await queue.enqueue_many("b", [{"n": n} for n in range(5)])
    scheduled = await queue.enqueue("a", {}, delay=timedelta(hours=1))
    queued = [r.run_id async for r in app.runs("listed", status="queued")]
    assert queued == [h.run_id for h in reversed(first + second)]
    only_b = [r.run_id async for r in app.runs("listed", job="b")]
    assert only_b == [h.run_id for h in reversed(second)]
    everything = [r async for r in app.runs("listed", limit=None)]
    assert [r.status for r in everything][-1] == RunStatus.SCHEDULED
    assert everything[-1].run_id == scheduled.run_id
    assert len(everything) == 11


async def test_a_rare_job_is_found_among_many_runs_of_other_jobs(
    app: Stackshift,
) -> None:
    """Filtering by job reads past pages of other jobs' runs (in every status,
    with and without a record) and pages through the matches one by one."""

    @app.job("common", queue="sparse")
    async def common(ctx: JobContext[Any]) -> None: ...

    @app.job("rare", queue="sparse")
    async def rare(ctx: JobContext[Any]) -> None: ...

    queue = app.queue("sparse")
    done = [
        await queue.enqueue("rare", {"n": n}, idempotency_key=f"d{n}") for n in range(3)
    ]
    await app.run_until_idle(["sparse"])
    queued = [await queue.enqueue("rare", {}, idempotency_key="q0")]
    await queue.enqueue_many("common", [{}] * 1200)
    queued.append(await queue.enqueue("rare", {}))
    await queue.enqueue_many("common", [{}] * 700)
    queued.append(await queue.enqueue("rare", {}, idempotency_key="q2"))
    later = await queue.enqueue("rare", {}, delay=timedelta(hours=1))
    seen: list[RunInfo] = []
    cursor = None
    while True:
        page, cursor = await app.store.list_runs(
            "sparse", job="rare", limit=2, cursor=cursor
        )
        assert len(page) <= 2
        seen += page
        if cursor is None:
            break
    assert [r.run_id for r in seen[:3]] == [h.run_id for h in reversed(queued)]
    assert seen[3].run_id == later.run_id
    assert {r.run_id for r in seen[4:]} == {h.run_id for h in done}
    assert [r.status for r in seen] == ["queued"] * 3 + ["scheduled"] + [
        "completed"
    ] * 3
    assert all(r.job == "rare" for r in seen)


async def test_a_job_filter_reads_a_bounded_number_of_runs_per_page(
    app: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its budget a filtered page comes back short, with a cursor that
    goes on where it stopped: no page reads a whole queue for a rare job."""
    from stackshift.store import inspect

    monkeypatch.setattr(inspect, "SCAN_PER_PAGE", 1000)
    queue = app.queue("bounded")
    rare = await queue.enqueue("rare", {})
    await queue.enqueue_many("common", [{}] * 3000)
    pages: list[list[str]] = []
    cursor = None
    while True:
        page, cursor = await app.store.list_runs(
            "bounded", job="rare", limit=10, cursor=cursor
        )
        pages.append([r.run_id for r in page])
        if cursor is None:
            break
    assert len(pages) >= 3  # 3,001 queued runs, at most 1,000 read per page
    assert [run_id for page in pages for run_id in page] == [rare.run_id]


async def test_runs_page_through_ten_thousand_runs(app: Stackshift) -> None:
    """Paging over a deep queue: every run once, newest first, in pages."""
    handles = await app.queue("deep").enqueue_many("a", [{}] * 10_000)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = await app.store.list_runs(
            "deep", status=RunStatus.QUEUED, limit=500, cursor=cursor
        )
        seen += [r.run_id for r in page]
        pages += 1
        if cursor is None:
            break
    assert seen == [h.run_id for h in reversed(handles)]
    assert pages in (20, 21)


async def test_retry_dead_redrives_every_dead_letter(app: Stackshift) -> None:
    failing = {"on": True}

    @app.job("flaky", retries=0)
    async def flaky(ctx: JobContext[Any]) -> str:
        if failing["on"]:
            raise ValueError("down")
        return "up"

    handles = await app.queue().enqueue_many("flaky", [{}] * 3)
    await app.run_until_idle(["default"])
    assert len(await app.dead_letters("default")) == 3
    failing["on"] = False
    assert await app.retry_dead("default") == 3
    await app.run_until_idle(["default"])
    assert [await h.result(timeout=5) for h in handles] == ["up"] * 3
    assert await app.retry_dead("default") == 0


async def test_a_released_idempotency_key_makes_a_new_run(app: Stackshift) -> None:
    first = await app.queue().enqueue("echo", {}, idempotency_key="import:f_1")
    again = await app.queue().enqueue("echo", {}, idempotency_key="import:f_1")
    assert again.deduplicated and again.run_id == first.run_id
    assert await app.release_idempotency_key("default", "import:f_1") is True
    fresh = await app.queue().enqueue("echo", {}, idempotency_key="import:f_1")
    assert not fresh.deduplicated and fresh.run_id != first.run_id
    assert await app.release_idempotency_key("default", "never-used") is False


# --- the testing kit ------------------------------------------------------------


async def test_run_until_idle_runs_retries_delays_and_sleeps_at_once(
    any_app: Stackshift,
) -> None:
    calls: list[int] = []

    @any_app.job("twice_failing", retries=3, backoff=timedelta(hours=1))
    async def twice_failing(ctx: JobContext[Any]) -> str:
        calls.append(ctx.attempt)
        await ctx.step.sleep("overnight", timedelta(hours=8))
        if ctx.attempt < 3:
            raise ValueError(f"attempt {ctx.attempt}")
        return "done"

    handle = await any_app.queue().enqueue(
        "twice_failing", {}, delay=timedelta(hours=1)
    )
    await asyncio.wait_for(any_app.run_until_idle(["default"]), 30)
    assert await handle.result(timeout=1) == "done"
    # Attempt 1 suspends in its sleep and goes on as attempt 1 when woken; the
    # sleep is slept once (later attempts replay its record).
    assert calls == [1, 1, 2, 3]


async def test_run_until_idle_leaves_a_run_waiting_for_an_event(
    any_app: Stackshift,
) -> None:
    @any_app.job("waits")
    async def waits(ctx: JobContext[dict[str, int]]) -> Any:
        return await ctx.step.wait_for_event(
            "refund",
            event="refund.issued",
            match={"order": ctx.payload["order"]},
            timeout=timedelta(days=1),
        )

    handle = await any_app.queue().enqueue("waits", {"order": 1})
    await asyncio.wait_for(any_app.run_until_idle(["default"]), 30)
    run = await any_app.get_run(handle.run_id)
    assert run is not None and run.status == RunStatus.SUSPENDED
    await any_app.send_event("refund.issued", {"order": 1, "amount": 5})
    await asyncio.wait_for(any_app.run_until_idle(["default"]), 30)
    assert await handle.result(timeout=1) == {"order": 1, "amount": 5}

    timing_out = await any_app.queue().enqueue("waits", {"order": 2})
    await asyncio.wait_for(any_app.run_until_idle(["default"], skip_waits=True), 30)
    assert await timing_out.result(timeout=1) is None


async def test_a_cancelled_run_fails_its_waiter(app: Stackshift) -> None:
    handle = await app.queue().enqueue("echo", {}, delay=timedelta(hours=1))
    assert await app.cancel(handle.run_id) == RunStatus.CANCELLED
    with pytest.raises(JobFailed) as failed:
        await handle.result(timeout=5)
    assert failed.value.error_type == "Cancelled"
    assert await app.cancel(handle.run_id) == RunStatus.CANCELLED  # idempotent


async def test_an_idle_worker_reports_no_run_in_flight(
    app: Stackshift, tmp_path: Any
) -> None:
    """The health file counts runs, not the slots a blocking read holds."""
    import json

    from tests.support.waiting import wait_until

    health = tmp_path / "health.json"
    async with running_worker(app, ["idle-a", "idle-b"], health_file=str(health)):
        await wait_until(health.exists, message="the health file")
        assert json.loads(health.read_text())["running"] == 0


async def test_inspecting_a_queue_that_does_not_exist_writes_nothing(
    app: Stackshift,
) -> None:
    stats = await app.store.queue_stats("typoqueue")
    assert (stats.waiting, stats.running, stats.dead, stats.consumers) == (0, 0, 0, 0)
    assert [r async for r in app.runs("typoqueue")] == []
    assert await app.dead_letters("typoqueue") == []
    assert await app.store.client.keys(f"{app.settings.prefix}*") == []
