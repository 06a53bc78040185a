"""OpenTelemetry traces of runs on a real Redis and a real worker, recorded by
the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from stackshift import JobContext, RunStatus, Stackshift
from stackshift.tracing import instrument, uninstrument
from tests.support.waiting import wait_until
from tests.support.workers import running_worker

from .scrape import scrape, value


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    found = InMemorySpanExporter()
    yield found
    found.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def add(a: int, b: int) -> int:
    return a + b


async def test_an_attempt_is_a_consumer_span_in_the_trace_that_enqueued_it(
    app: Stackshift, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @app.job("sum")
    async def total(ctx: JobContext[Any]) -> int:
        three = await ctx.step.run("add", add, 1, 2)
        return await ctx.step.run("add", add, three, 4)  # its second use: add#2

    instrument(app, tracer_provider=provider)
    tracer = provider.get_tracer("test")
    async with running_worker(app, ["t"]):
        with tracer.start_as_current_span("request") as request:
            handle = await app.queue("t").enqueue("sum", correlation_id="order-7")
        assert await handle.result(timeout=10) == 7
        await wait_until(lambda: spans(exporter, "process t"))

    (send,) = spans(exporter, "send t")
    (process,) = spans(exporter, "process t")
    steps = spans(exporter, "step add") + spans(exporter, "step add#2")
    trace_id = request.get_span_context().trace_id
    # One trace: request > send t > process t > step add, step add#2.
    assert {s.context.trace_id for s in [send, process, *steps]} == {trace_id}
    assert parent_id(send) == request.get_span_context().span_id
    assert parent_id(process) == send.context.span_id
    assert [parent_id(s) for s in steps] == [process.context.span_id] * 2
    # The process span links to the message's creation context, the send span.
    assert [link.context.span_id for link in process.links] == [send.context.span_id]

    assert send.kind == SpanKind.PRODUCER
    assert dict(send.attributes or {}) == {
        "messaging.system": "stackshift",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "t",
        "messaging.message.id": handle.run_id,
        "stackshift.job": "sum",
        "stackshift.deduplicated": False,
        "server.address": "127.0.0.1",
        "server.port": 6379,
    }
    assert process.kind == SpanKind.CONSUMER
    attributes = dict(process.attributes or {})
    client_id = attributes.pop("messaging.client.id")
    assert isinstance(client_id, str) and client_id
    assert attributes == {
        "messaging.system": "stackshift",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "t",
        "messaging.consumer.group.name": "stackshift",
        "messaging.message.id": handle.run_id,
        "messaging.message.conversation_id": "order-7",
        "stackshift.job": "sum",
        "stackshift.attempt": 1,
        "stackshift.outcome": "completed",
        "server.address": "127.0.0.1",
        "server.port": 6379,
    }
    assert [dict(s.attributes or {})["stackshift.step"] for s in steps] == [
        "add",
        "add#2",
    ]
    assert all(s.kind == SpanKind.INTERNAL for s in steps)


async def test_retries_and_resumes_of_a_run_continue_its_trace(
    app: Stackshift, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @app.job("flow", retries=2, backoff=0.05)
    async def flow(ctx: JobContext[Any]) -> Any:
        await ctx.step.run("prepare", add, 1, 1)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return await ctx.step.wait_for_event(
            "approval", event="approved", match={"run": ctx.run_id}
        )

    instrument(app, tracer_provider=provider)
    # With metrics on too: both observe the same attempts.
    async with running_worker(
        app, ["t"], metrics_port=0, metrics_host="127.0.0.1"
    ) as worker:
        handle = await app.queue("t").enqueue("flow")  # no span around it
        await wait_until(lambda: _suspended(app, handle.run_id))
        await app.send_event("approved", {"run": handle.run_id})
        assert await handle.result(timeout=10) == {"run": handle.run_id}
        await wait_until(lambda: len(spans(exporter, "process t")) == 3)
        samples = await scrape(worker)

    (send,) = spans(exporter, "send t")
    assert send.parent is None  # a root: nothing traced around the enqueue
    processes = sorted(spans(exporter, "process t"), key=lambda s: s.start_time or 0)
    outcomes = [dict(s.attributes or {})["stackshift.outcome"] for s in processes]
    assert outcomes == ["retry_scheduled", "suspended", "completed"]
    # Every attempt, the retry and the resume after the wait, in one trace,
    # under the send span, and linked to it.
    for span in processes:
        assert span.context.trace_id == send.context.trace_id
        assert parent_id(span) == send.context.span_id
        assert [link.context.span_id for link in span.links] == [send.context.span_id]
    failed = processes[0]
    assert failed.status.status_code == StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "RuntimeError"
    assert [e.name for e in failed.events] == ["exception"]
    assert processes[2].status.status_code == StatusCode.UNSET
    # The step ran in the first attempt only; later attempts replayed it.
    (prepare,) = spans(exporter, "step prepare")
    assert parent_id(prepare) == processes[0].context.span_id
    assert value(samples, "stackshift_runs_started_total", queue="t", job="flow") == 3


async def _suspended(app: Stackshift, run_id: str) -> bool:
    info = await app.get_run(run_id)
    return info is not None and info.status == RunStatus.SUSPENDED


async def test_a_child_run_is_traced_under_the_attempt_that_invoked_it(
    app: Stackshift, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @app.job("child")
    async def child(ctx: JobContext[Any]) -> int:
        return 1

    @app.job("parent")
    async def parent(ctx: JobContext[Any]) -> int:
        return int(await ctx.step.invoke("kid", "child", queue="t")) + 1

    instrument(app, tracer_provider=provider)
    async with running_worker(app, ["t"]):
        handle = await app.queue("t").enqueue("parent")
        assert await handle.result(timeout=10) == 2
        await wait_until(lambda: len(spans(exporter, "process t")) == 3)

    first, child_send = sorted(
        spans(exporter, "send t"), key=lambda s: s.start_time or 0
    )
    processes = spans(exporter, "process t")
    by_job: dict[str, list[ReadableSpan]] = {}
    for span in processes:
        job = str(dict(span.attributes or {})["stackshift.job"])
        by_job.setdefault(job, []).append(span)
    (kid,) = by_job["child"]
    parent_attempts = sorted(by_job["parent"], key=lambda s: s.start_time or 0)
    assert parent_id(child_send) == parent_attempts[0].context.span_id
    assert parent_id(kid) == child_send.context.span_id
    assert {s.context.trace_id for s in processes} == {first.context.trace_id}


async def test_a_run_in_a_partition_is_processed_under_its_queues_name(
    app: Stackshift, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """DESIGN §7: a CONSUMER span ``process <queue>``, and §8: a partitioned
    queue is one queue. The partition is an attribute, not part of the name."""

    @app.job("echo")
    async def echo(ctx: JobContext[Any]) -> int:
        return 1

    instrument(app, tracer_provider=provider)
    handles = await app.queue("pt", partitions=3).enqueue_many("echo", [{}] * 6)
    async with running_worker(app, ["pt"]):
        assert [await h.result(timeout=10) for h in handles] == [1] * 6
        await wait_until(lambda: len(spans(exporter, "process pt")) == 6)

    processes = spans(exporter, "process pt")
    assert not [s.name for s in exporter.get_finished_spans() if ":" in s.name]
    attributes = [dict(s.attributes or {}) for s in processes]
    assert {a["messaging.destination.name"] for a in attributes} == {"pt"}
    runs = await app.store.get_runs([h.run_id for h in handles])
    by_run = {r.run_id: str(r.partition) for r in runs if r is not None}
    assert {
        str(a["messaging.message.id"]): a["messaging.destination.partition.id"]
        for a in attributes
    } == by_run


async def test_enqueue_many_is_one_send_span_whose_context_every_run_keeps(
    app: Stackshift, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    instrument(app, tracer_provider=provider)
    handles = await app.queue("t").enqueue_many("later", [{"n": i} for i in range(3)])
    (send,) = spans(exporter, "send t")
    assert dict(send.attributes or {})["messaging.batch.message_count"] == 3
    ctx = send.context
    expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    for handle in handles:
        kept = await app.store.trace_context(handle.run_id)
        assert kept == {"traceparent": expected}


async def test_enqueue_sync_is_traced_under_the_callers_span(
    app: Stackshift, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    instrument(app, tracer_provider=provider)
    tracer = provider.get_tracer("test")

    def view() -> str:  # a Flask-style view in a thread without a loop
        with tracer.start_as_current_span("view"):
            return app.queue("t").enqueue_sync("later", {}).run_id

    import anyio.to_thread

    try:
        await anyio.to_thread.run_sync(view)
    finally:
        await anyio.to_thread.run_sync(app.close_sync)
    (view_span,) = spans(exporter, "view")
    (send,) = spans(exporter, "send t")
    assert parent_id(send) == view_span.context.span_id


async def test_untraced_runs_keep_no_trace_context(
    app: Stackshift, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    queue = app.queue("t")
    plain = await queue.enqueue("later")
    # Instrumented, but with no SDK (a no-op provider): no context to keep.
    instrument(app, tracer_provider=NoOpTracerProvider())
    no_sdk = await queue.enqueue("later")
    instrument(app, tracer_provider=provider)
    uninstrument(app)
    after = await queue.enqueue("later")
    for handle in (plain, no_sdk, after):
        assert await app.store.trace_context(handle.run_id) == {}
        # Still queued without a record of its own (the compact index).
        assert not await app.store.client.exists(
            app.store.keys.queue("t").run(handle.run_id)
        )
    assert exporter.get_finished_spans() == ()
