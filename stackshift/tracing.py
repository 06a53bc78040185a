"""OpenTelemetry traces of an app's runs (``stackshift[otel]``).

``instrument(app)`` turns them on, for the app's enqueue side and for every
worker that runs its jobs; nothing is traced until it is called::

    from stackshift.tracing import instrument
    instrument(app)                      # the global tracer provider, or tracer_provider=

What it records (the OpenTelemetry messaging semantic conventions):

- ``send <queue>`` (PRODUCER) around each enqueue call (one span for a bulk
  ``enqueue_many``). Its W3C trace context is kept on the record of each run
  it makes (``traceparent``, ``tracestate``): the run's creation context.
- ``process <queue>`` (CONSUMER) for each attempt, parented by the run's
  creation context and linked to it, so that every attempt of a run,
  retries and resumes after a sleep, a wait or a child run, is in the trace
  that enqueued it. A run made without a kept context (an enqueue that was not
  traced, a cron tick, an event's run) has a trace of its own per attempt.
- ``step <id>`` (INTERNAL), a child of its attempt's span, for each
  ``step.run`` body that runs (replayed steps did nothing, and have none).

``messaging.system`` is ``stackshift``: the conventions name the system whose
semantics the other attributes follow (queue names, run ids, attempts), and
those are stackshift's; Redis is its storage, not the messaging system an app
talks to (a Redis client's own spans are ``db.*`` spans).

Cost when on: a span per enqueue, per attempt and per step run, one HMGET per
attempt (the creation context), and a record written at enqueue for runs that
would otherwise have none until they start. Off (not instrumented): nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextvars import Token
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "stackshift.tracing needs OpenTelemetry: pip install 'stackshift[otel]'"
    ) from exc

from .context import LeaseLost, RunSuspended
from .errors import StoreError
from .logs import get_logger
from .observe import AttemptInfo, StepDone, hooks_of
from .store.keys import GROUP, split_partition

if TYPE_CHECKING:
    from .app import Stackshift
    from .store import EnqueueResult, Store

__all__ = ["instrument", "uninstrument"]

log = get_logger("stackshift.tracing")

SYSTEM = "stackshift"
_PROPAGATOR = TraceContextTextMapPropagator()
# Ways an attempt or step stops that are not its failure (no error status).
_STOPS = (asyncio.CancelledError, LeaseLost, RunSuspended)


def instrument(app: Stackshift, *, tracer_provider: Any = None) -> None:
    """Trace ``app``'s enqueues and the attempts and steps of its runs.

    Call it in every process that enqueues or runs jobs (the web app and the
    worker), before the worker starts.

    Args:
        app: the app to trace.
        tracer_provider: an OpenTelemetry ``TracerProvider`` (default: the
            global one, ``opentelemetry.trace.set_tracer_provider``).
    """
    try:
        version = metadata.version("stackshift")
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        version = ""
    tracer = trace.get_tracer("stackshift", version, tracer_provider)
    common = {"messaging.system": SYSTEM, **_server_attributes(app.settings.url)}
    hooks = hooks_of(app)
    hooks.producer = _Producer(tracer, common)
    hooks.worker = _Consumer(tracer, app.store, common)


def uninstrument(app: Stackshift) -> None:
    """Stop tracing ``app`` (workers started from now on)."""
    hooks = hooks_of(app)
    hooks.producer = None
    hooks.worker = None


def _server_attributes(url: str) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of a Redis URL (never its
    credentials); none for memory:// or a unix socket."""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme in ("memory", "unix"):
        return {}
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 26379 if "sentinel" in parts.scheme else 6379
    return {"server.address": parts.hostname, "server.port": port or default}


def _failed(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


# --- the enqueue side ---------------------------------------------------------


class _Producer:
    """A ``send <queue>`` span per enqueue call (observe.Producer)."""

    def __init__(self, tracer: Tracer, common: dict[str, Any]) -> None:
        self._tracer = tracer
        self._common = common

    def sending(self, queue: str, job: str, count: int) -> _Sending:
        attributes = {
            **self._common,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": queue,
            "stackshift.job": job,
        }
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        span = self._tracer.start_span(
            f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        fields: dict[str, str] = {}
        # Nothing when the span has no valid context (no SDK, no parent): the
        # runs then keep no context and stay as compact as untraced ones.
        _PROPAGATOR.inject(fields, context=trace.set_span_in_context(span))
        return _Sending(span, fields)


class _Sending:
    """One enqueue call's span (observe.Sending)."""

    def __init__(self, span: Span, fields: dict[str, str]) -> None:
        self._span = span
        self.fields = fields

    def ended(
        self, results: Sequence[EnqueueResult] | None, error: BaseException | None
    ) -> None:
        span = self._span
        if results is not None and len(results) == 1:
            span.set_attribute("messaging.message.id", results[0].run_id)
            span.set_attribute("stackshift.deduplicated", results[0].deduplicated)
        if error is not None:
            _failed(span, error)
        span.end()


# --- the worker side ----------------------------------------------------------


class _Consumer:
    """A ``process <queue>`` span per attempt (observe.WorkerObserver)."""

    def __init__(self, tracer: Tracer, store: Store, common: dict[str, Any]) -> None:
        self._tracer = tracer
        self._store = store
        self._common = common

    async def attempt_began(self, info: AttemptInfo) -> _AttemptSpan | None:
        try:
            carrier = await self._store.trace_context(info.run_id)
        except StoreError as exc:  # traced without its link, rather than not run
            log.warning("trace_context_unread", run_id=info.run_id, error=str(exc))
            carrier = {}
        try:
            return self._start(info, carrier)
        except Exception:  # tracing must never fail a run
            log.exception("trace_span_failed", run_id=info.run_id)
            return None

    def _start(self, info: AttemptInfo, carrier: dict[str, str]) -> _AttemptSpan:
        # From an empty context, not the current one: a worker started inside
        # some span must not make every run a child of it.
        parent = _PROPAGATOR.extract(carrier, context=Context())
        creation = trace.get_current_span(parent).get_span_context()
        # The queue by its name (as the send span has it), also for a run in
        # one of its partitions: the partition is an attribute of its own.
        queue, partition = split_partition(info.queue)
        attributes: dict[str, str | int] = {
            **self._common,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": queue,
            "messaging.consumer.group.name": GROUP,
            "messaging.client.id": info.consumer,
            "messaging.message.id": info.run_id,
            "messaging.message.conversation_id": info.correlation_id,
            "stackshift.job": info.job,
            "stackshift.attempt": info.number,
        }
        if partition is not None:
            attributes["messaging.destination.partition.id"] = str(partition)
        span = self._tracer.start_span(
            f"process {queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=[Link(creation)] if creation.is_valid else None,
        )
        # Current for the attempt (the run's own task): steps, and enqueues
        # made by the job, are its children.
        token = otel_context.attach(trace.set_span_in_context(span))
        return _AttemptSpan(self._tracer, span, token, info.job)

    def runs_reclaimed(self, queue: str, count: int) -> None:
        pass  # a metric, not a span


class _AttemptSpan:
    """One attempt's span (observe.AttemptObserver)."""

    __slots__ = ("_job", "_span", "_token", "_tracer")

    def __init__(
        self, tracer: Tracer, span: Span, token: Token[Context], job: str
    ) -> None:
        self._tracer = tracer
        self._span = span
        self._token = token
        self._job = job

    def step_began(self, step: str) -> StepDone:
        span = self._tracer.start_span(
            f"step {step}",
            attributes={"stackshift.step": step, "stackshift.job": self._job},
        )
        token = otel_context.attach(trace.set_span_in_context(span))

        def done(error: BaseException | None) -> None:
            if error is not None and not isinstance(error, _STOPS):
                _failed(span, error)
            span.end()
            otel_context.detach(token)

        return done

    def ended(self, how: str, error: BaseException | None, seconds: float) -> None:
        span = self._span
        span.set_attribute("stackshift.outcome", how)
        if error is not None:
            _failed(span, error)
        span.end()
        otel_context.detach(self._token)
