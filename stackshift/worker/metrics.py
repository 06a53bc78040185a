"""A worker's Prometheus metrics (DESIGN.md §7) and its probe server:
``/metrics``, ``/healthz`` and ``/readyz`` on ``Worker(metrics_port=...)``
(``stackshift worker --metrics-port``). Needs ``stackshift[metrics]``.

- Run metrics are counted in plain ints and floats on the worker's event loop
  (observe.py hooks: no lock, no label lookup of prometheus-client's per
  update) and turned into metric families when Prometheus scrapes.
- Queue gauges are read from Redis at scrape time: one pipelined read per
  queue (and one XRANGE of one entry when runs are queued), never per run.
- Everything lives in a registry of the worker's own (``Worker.metrics_registry``),
  not prometheus-client's global one.
- The server is a small asyncio HTTP/1.1 server on the worker's own event
  loop: answering at all is what ``/healthz`` says.

Label values are bounded: queue names are the worker's queues, job names
those registered in its app (any other is ``(unregistered)``); never run ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import anyio
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..errors import ConfigError, StoreError
from ..logs import get_logger
from ..observe import FINISHED, AttemptInfo, StepDone
from ..store.keys import split_partition

if TYPE_CHECKING:
    from ..store import Store

log = get_logger("stackshift.worker")

# Seconds; jobs run from milliseconds to an hour (the default timeout is 30 min).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 300.0, 900.0, 1800.0, 3600.0)  # fmt: skip
_LE = [*(repr(b) for b in BUCKETS), "+Inf"]  # as Prometheus prints them: 1.0, 0.005
OUTCOMES = tuple(dict.fromkeys(FINISHED.values()))
STATUSES = ("queued", "running", "scheduled", "suspended", "dead")
# The job label of runs whose job this worker's app does not register (they
# fail at once): a value no job name can take, so the label stays bounded.
UNREGISTERED = "(unregistered)"

READ_TIMEOUT = 5.0  # the queue gauges' reads of one scrape, all queues
PROBE_TIMEOUT = 2.0  # /readyz: Redis must answer within this
REQUEST_TIMEOUT = 10.0  # a client that sends no complete request head
MAX_REQUEST_HEAD = 16 * 1024


class Histogram:
    """Counts per bucket (not cumulative) and a sum: one bisect per value."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1  # le: bound >= value
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for le, count in zip(_LE, self.counts, strict=True):
            running += count
            out.append((le, float(running)))
        return out


class _Series:
    """The run metrics of one (queue, job), and its job's step durations. It is
    also what observes each attempt of that queue and job (observe.py
    AttemptObserver): nothing is made per attempt."""

    __slots__ = ("duration", "finished", "leases_lost", "queue", "started", "steps")

    def __init__(
        self, queue: str, steps: Histogram, leases_lost: dict[str, int]
    ) -> None:
        self.queue = queue
        self.started = 0
        self.finished = dict.fromkeys(OUTCOMES, 0)
        self.duration = Histogram()
        self.steps = steps
        self.leases_lost = leases_lost  # the worker's, by queue

    def step_began(self, step: str) -> StepDone:
        began = time.monotonic()
        steps = self.steps

        def done(error: BaseException | None) -> None:
            steps.observe(time.monotonic() - began)

        return done

    def ended(self, how: str, error: BaseException | None, seconds: float) -> None:
        outcome = FINISHED.get(how)
        if outcome is not None:
            self.finished[outcome] += 1
            self.duration.observe(seconds)
        elif how == "lease_lost":
            self.leases_lost[self.queue] = self.leases_lost.get(self.queue, 0) + 1


class RunMetrics(Collector):
    """Attempts, finishes, durations, reclaimed entries and lost leases of one
    worker: the observer of its runs (observe.WorkerObserver)."""

    def __init__(self, queues: list[str], registered: Callable[[str], bool]) -> None:
        self._registered = registered
        self._series: dict[tuple[str, str], _Series] = {}
        self._steps: dict[str, Histogram] = {}
        # Per queue from the start: rate() needs a series before its first event.
        self.reclaimed = dict.fromkeys(queues, 0)
        self.leases_lost = dict.fromkeys(queues, 0)

    # --- observe.WorkerObserver ---------------------------------------------

    async def attempt_began(self, info: AttemptInfo) -> _Series:
        # Keyed by the job's name when it is registered, else by UNREGISTERED
        # (which no job name can be): a run of an unknown job adds no series.
        # An attempt started early from its entry counts at once; if start.lua
        # then refuses it (rare: its run was cancelled meanwhile), it ends
        # "not_started", with no finish.
        queue = split_partition(info.queue)[0]  # a partition counts as its queue
        series = self._series.get((queue, info.job))
        if series is None:
            series = self._new_series(queue, info.job)
        series.started += 1
        return series

    def _new_series(self, queue: str, job: str) -> _Series:
        if not self._registered(job):
            job = UNREGISTERED
        series = self._series.get((queue, job))
        if series is None:
            steps = self._steps.get(job)
            if steps is None:
                steps = self._steps[job] = Histogram()
            series = self._series[queue, job] = _Series(queue, steps, self.leases_lost)
        return series

    def runs_reclaimed(self, queue: str, count: int) -> None:
        queue = split_partition(queue)[0]
        self.reclaimed[queue] = self.reclaimed.get(queue, 0) + count

    # --- prometheus_client Collector ------------------------------------------

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        started, finished, duration, steps, reclaimed, lost = self._families()
        for (queue, job), s in list(self._series.items()):
            started.add_metric([queue, job], s.started)
            for outcome, count in s.finished.items():
                finished.add_metric([queue, job, outcome], count)
            duration.add_metric([queue, job], s.duration.buckets(), s.duration.total)
        for job, h in list(self._steps.items()):
            steps.add_metric([job], h.buckets(), h.total)
        for queue, count in list(self.reclaimed.items()):
            reclaimed.add_metric([queue], count)
        for queue, count in list(self.leases_lost.items()):
            lost.add_metric([queue], count)
        yield from (started, finished, duration, steps, reclaimed, lost)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
        HistogramMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        return (
            CounterMetricFamily(
                "stackshift_runs_started",
                "Attempts begun (every attempt of a run counts).",
                labels=["queue", "job"],
            ),
            CounterMetricFamily(
                "stackshift_runs_finished",
                "Attempts ended: completed, retried (failed, retry scheduled), "
                "failed (dead-lettered), cancelled, suspended.",
                labels=["queue", "job", "outcome"],
            ),
            HistogramMetricFamily(
                "stackshift_run_duration_seconds",
                "Duration of one attempt that finished, its outcome written included.",
                labels=["queue", "job"],
            ),
            HistogramMetricFamily(
                "stackshift_step_duration_seconds",
                "Duration of step.run bodies that ran (not replayed), their "
                "checkpoint included.",
                labels=["job"],
            ),
            CounterMetricFamily(
                "stackshift_runs_reclaimed",
                "Entries of dead or stalled workers taken over by this worker.",
                labels=["queue"],
            ),
            CounterMetricFamily(
                "stackshift_leases_lost",
                "Attempts stopped because another worker took their run over.",
                labels=["queue"],
            ),
        )


class QueueMetrics(Collector):
    """Runs by status and the age of the oldest queued run, per queue, as read
    by the last ``refresh`` (called by the server before each scrape)."""

    def __init__(self, store: Store, queues: list[str]) -> None:
        self._store = store
        self._queues = queues
        # queue -> (counts by status, oldest queued age in seconds)
        self._read: dict[str, tuple[dict[str, int], float]] = {}

    async def refresh(self) -> None:
        read: dict[str, tuple[dict[str, int], float]] = {}
        try:
            with anyio.fail_after(READ_TIMEOUT):
                for queue in self._queues:
                    g = await self._store.queue_gauges(queue)
                    now_ms = self._store.server_now_ms() or time.time() * 1000
                    age = 0.0
                    if g.oldest_queued_ms is not None:
                        age = max(0.0, (now_ms - g.oldest_queued_ms) / 1000)
                    counts = {
                        "queued": g.queued,
                        "running": g.running,
                        "scheduled": g.scheduled,
                        "suspended": g.suspended,
                        "dead": g.dead,
                    }
                    read[queue] = (counts, age)
        except (StoreError, TimeoutError) as exc:
            # No gauges this scrape rather than stale ones; counters still go out.
            log.warning("metrics_queue_read_failed", error=str(exc) or "timed out")
            read = {}
        self._read = read

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        runs, latency = self._families()
        for queue, (counts, age) in list(self._read.items()):
            for status in STATUSES:
                runs.add_metric([queue, status], counts[status])
            latency.add_metric([queue], age)
        yield from (runs, latency)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "stackshift_queue_runs",
                "Runs of the queue by status (read from Redis at scrape time).",
                labels=["queue", "status"],
            ),
            GaugeMetricFamily(
                "stackshift_queue_latency_seconds",
                "Age of the oldest queued run not yet delivered to a worker "
                "(0: none queued).",
                labels=["queue"],
            ),
        )


class WorkerMetrics:
    """The metrics of one worker, its registry and its probe server."""

    def __init__(
        self, store: Store, queues: list[str], registered: Callable[[str], bool]
    ) -> None:
        self._store = store
        self._queues = queues
        self.registry = CollectorRegistry()
        self.runs = RunMetrics(queues, registered)
        self.queues = QueueMetrics(store, queues)
        self.registry.register(self.runs)
        self.registry.register(self.queues)
        self.port: int | None = None  # the bound port, once serving

    @contextlib.asynccontextmanager
    async def serving(
        self, host: str, port: int, state: Callable[[], str]
    ) -> AsyncIterator[None]:
        """Serve /metrics, /healthz and /readyz on (host, port) for the block.
        ``state()`` says what the worker is doing: starting, running, stopping."""
        self._state = state
        try:
            server = await asyncio.start_server(
                self._serve, host, port, limit=MAX_REQUEST_HEAD
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("metrics_serving", host=host, port=self.port)
        try:
            yield
        finally:
            server.close()
            # Connections in flight are short (one response each): let them end.
            with anyio.move_on_after(1), anyio.CancelScope(shield=True):
                await server.wait_closed()

    async def readiness(self) -> tuple[bool, str]:
        """(ready, why): the worker runs, Redis answers a PING, and every one of
        its queues has its consumer group."""
        state = self._state()
        if state != "running":
            return False, f"worker {state}"
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                await self._store.ping()
                missing = [
                    q
                    for q in self._queues
                    if not (await self._store.queue_gauges(q)).group
                ]
        except TimeoutError:
            return False, f"redis did not answer within {PROBE_TIMEOUT:g} s"
        except StoreError as exc:
            return False, f"redis: {exc}"
        if missing:
            return False, f"consumer groups missing: {', '.join(missing)}"
        return True, "ready"

    # --- HTTP ----------------------------------------------------------------

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One request per connection: read its head, answer, close."""
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = await self._respond(head)
            method = head.split(b" ", 1)[0]
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            TimeoutError,
        ):
            pass  # a client that went away, sent too much, or nothing at all
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, head: bytes) -> tuple[str, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return "400 Bad Request", _TEXT, b"bad request\n"
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", _TEXT, b"GET or HEAD only\n"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            accept = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in lines[1:]
                    if line.lower().startswith("accept:")
                ),
                "",
            )
            await self.queues.refresh()
            encoder, ctype = choose_encoder(accept)
            return "200 OK", ctype, encoder(self.registry)
        if path == "/healthz":
            return "200 OK", _TEXT, b"ok\n"  # the event loop answered
        if path == "/readyz":
            ready, why = await self.readiness()
            status = "200 OK" if ready else "503 Service Unavailable"
            return status, _TEXT, f"{why}\n".encode()
        return "404 Not Found", _TEXT, b"not found: /metrics, /healthz, /readyz\n"


_TEXT = "text/plain; charset=utf-8"
