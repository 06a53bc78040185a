"""Worker: a lane per queue, runners, lease keeper, scheduler, notices and
the event router, together.

lane (per queue): read (XREADGROUP) ─┐
                                     ├─▶ dispatch (start.lua) ─▶ runner ─▶ finish.lua
          reclaim (XAUTOCLAIM) ──────┘                             ▲
lease keeper ── renew.lua every lease_timeout/3 ───────────────────┘ (stops lost
                                                                  or cancelled runs)
scheduler ── timers.lua: due runs ─▶ stream; cron ticks; hand-offs left undone
notices ── pub/sub: wake the scheduler, cancel a running run
event router ── events stream ─▶ event_route.lua, runs of subscribed jobs, resume.lua
metrics (metrics_port) ── /metrics, /healthz, /readyz; runs observed via observe.py
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from ..errors import ConfigError, StoreError
from ..logs import get_logger
from ..observe import WorkerObserver, combined, hooks_of
from ..store import StartResult
from ..store.keys import check_name
from .cron import CronKeeper
from .dispatch import Dispatcher
from .events import EventRouter
from .health import HealthReporter
from .lane import BLOCK_MS, BURST_BLOCK_MS, Lane
from .lease import LeaseKeeper
from .notices import Notices
from .runner import Runner
from .scheduler import Scheduler
from .slots import Slots

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..app import Stackshift
    from .metrics import WorkerMetrics

__all__ = ["Worker"]

log = get_logger("stackshift.worker")

DEFAULT_CONCURRENCY = 10
DEFAULT_LEASE_TIMEOUT = 30.0
DEFAULT_GRACE_PERIOD = 25.0


def default_consumer_name() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Runs the jobs of an app found on ``queues``.

    Args:
        app: the app whose registered jobs this worker runs.
        queues: the queues to serve.
        concurrency: handlers running at once (default 10). A run whose
            handler has returned gives its slot to the next while its outcome
            is written; at most as many writes again are in flight.
        lease_timeout: seconds after which a silent worker's runs are taken over
            by others (default 30); leases are renewed every third of it.
        grace_period: on stop, seconds in-flight runs get to finish before they
            are handed back to the queue (default 25).
        burst: stop once the queues are empty: nothing waiting, running,
            scheduled, or suspended with a deadline (a run waiting for an event
            with no timeout does not keep it).
        name: the consumer name (default ``<host>-<pid>-<random>``).
        health_file: a file rewritten every few seconds while the worker can
            reach Redis, for orchestrator probes (``stackshift check``).
        timers: 'real'; for tests (``app.run_until_idle``), 'skip' makes
            scheduled runs and sleeps due at once, 'skip_all' also wait timeouts.
        metrics_port: serve Prometheus metrics on ``/metrics``, and the probes
            ``/healthz`` and ``/readyz``, on this port (0: any free one; see
            ``metrics_address``). Needs ``stackshift[metrics]``. Default: off.
        metrics_host: the address that server binds (default all interfaces).
    """

    def __init__(
        self,
        app: Stackshift,
        queues: list[str],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        burst: bool = False,
        name: str | None = None,
        health_file: str | None = None,
        timers: str = "real",
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
    ) -> None:
        if not queues:
            raise ConfigError("a worker needs at least one queue")
        if lease_timeout <= 0 or grace_period < 0 or concurrency < 1:
            raise ConfigError(
                "lease_timeout > 0, grace_period >= 0 and concurrency >= 1"
            )
        self.app = app
        self.queues = list(dict.fromkeys(check_name(q, "queue") for q in queues))
        self.concurrency = concurrency
        self.lease_timeout = lease_timeout
        self.grace_period = grace_period
        self.burst = burst
        self.consumer = name or default_consumer_name()
        store = app.store
        self._store = store
        self._slots = Slots(concurrency)
        self._leases = LeaseKeeper(store, self.consumer, lease_timeout)
        if timers not in ("real", "skip", "skip_all"):
            raise ConfigError(
                f"timers must be 'real', 'skip' or 'skip_all', not {timers!r}"
            )
        self._timers = timers
        # The queues as stored: each queue, or each of its partitions (read
        # from the registry when the worker starts).
        self._stored: list[str] = []
        self._scheduler = Scheduler(store, self._stored, timers)
        self._runner = Runner(app, self._leases, self._slots, self._scheduler.poke)
        self._notices = Notices(
            store, self._stored, self._scheduler.poke, self._leases.cancel_run
        )
        self._router = EventRouter(store, self.consumer, lease_timeout)
        self._stop = asyncio.Event()
        self._run_tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by run()
        self._health = (
            HealthReporter(store, health_file, self.consumer, self._slots)
            if health_file
            else None
        )
        self._redis_run_id = ""
        self._force = False
        self._started = False  # the consumer groups exist: /readyz may say ready
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._metrics = self._make_metrics() if metrics_port is not None else None

    def __repr__(self) -> str:
        return f"Worker({self.consumer!r}, queues={self.queues})"

    def stop(self, *, force: bool = False) -> None:
        """Stop fetching; in-flight runs get the grace period (none if ``force``)."""
        self._force = self._force or force
        self._stop.set()
        if self._force:
            self._leases.cancel_all()

    @property
    def metrics_registry(self) -> CollectorRegistry | None:
        """The registry ``/metrics`` serves (None without ``metrics_port``): an
        app may register collectors of its own in it."""
        return None if self._metrics is None else self._metrics.registry

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) ``/metrics`` is served on, while it is."""
        if self._metrics is None or self._metrics.port is None:
            return None
        return self.metrics_host, self._metrics.port

    def _make_metrics(self) -> WorkerMetrics:
        port = self.metrics_port
        if port is None or not 0 <= port <= 65535:
            raise ConfigError(f"metrics_port must be 0 to 65535, not {port!r}")
        try:
            from .metrics import WorkerMetrics
        except ImportError as exc:
            raise ConfigError(
                "metrics_port needs prometheus-client: pip install 'stackshift[metrics]'"
            ) from exc
        registry = self.app.registry
        return WorkerMetrics(
            self._store, self.queues, lambda job: registry.find(job) is not None
        )

    def _status(self) -> str:
        """What /readyz reports: starting, running or stopping."""
        if self._stop.is_set():
            return "stopping"
        return "running" if self._started else "starting"

    async def run(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the queues until ``stop()`` (or, with ``burst``, until they are empty).

        Calls ``task_status.started()`` once the consumer groups exist, so
        ``await tg.start(worker.run)`` returns when the worker is ready.
        """
        if self._metrics is None:
            await self._run(task_status)
            return
        # From before the start-up checks to after the hand-back: /healthz
        # answers throughout, /readyz says ready only in between.
        assert self.metrics_port is not None
        async with self._metrics.serving(
            self.metrics_host, self.metrics_port, self._status
        ):
            await self._run(task_status)

    async def _run(self, task_status: TaskStatus[None]) -> None:
        # Metrics and traces (observe.py): resolved here, so that an app may
        # call stackshift.tracing.instrument(app) after making the worker.
        observer = combined(
            None if self._metrics is None else self._metrics.runs,
            hooks_of(self.app).worker,
        )
        self._runner.observer = observer
        self._loop = asyncio.get_running_loop()  # where runs are spawned
        await self._startup_checks()
        for queue in self.queues:  # (registers the queue too)
            await self._store.partitions(queue, self.app.declared_partitions(queue))
            self._stored += self._store.stored(queue)
        for queue in self._stored:
            await self._store.ensure_group(queue)
        crons = CronKeeper(self._store, self.app.registry.crons(), self.queues)
        if len(crons):
            self._scheduler.add_chore(crons)
        await self._store.ensure_event_group()
        await self._subscribe()
        await self._store.register(
            "crons",
            *(
                f"{spec.queue or 'default'}\x1f{spec.name}"
                for spec in self.app.registry.crons()
                if (spec.queue or "default") in self.queues
            ),
        )
        log.info(
            "worker_started",
            consumer=self.consumer,
            queues=self.queues,
            concurrency=self.concurrency,
            lease_timeout=self.lease_timeout,
            jobs=self.app.registry.names(),
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        try:
            async with anyio.create_task_group() as runs:
                runs.start_soon(self._leases.run)
                if self._health is not None:
                    runs.start_soon(self._health.run)
                async with anyio.create_task_group() as loops:
                    await loops.start(self._notices.run)
                    for lane in self._lanes(observer):
                        loops.start_soon(self._until_done, lane.run)
                    loops.start_soon(self._scheduler.run)
                    loops.start_soon(self._router.run)
                    self._started = True
                    task_status.started()
                    await self._stop.wait()
                    loops.cancel_scope.cancel()
                try:
                    await self._drain()
                finally:
                    # Only if the worker itself was cancelled.
                    for task in self._run_tasks:
                        task.cancel()
                runs.cancel_scope.cancel()
        finally:
            self._runner.close()  # the jobs' timeout timers
        with anyio.CancelScope(shield=True):
            await self._hand_back_pending()
        if self._health is not None:
            self._health.remove()
        log.info("worker_stopped", consumer=self.consumer)

    def _lanes(self, observer: WorkerObserver | None) -> list[Lane]:
        dispatcher = Dispatcher(
            self._store,
            self.consumer,
            self._slots,
            self._spawn,
            self._leases.stop_refused,
        )
        return [
            Lane(
                self._store,
                self.consumer,
                queue,
                self._slots,
                dispatcher,
                self.lease_timeout,
                self._queues_drained,
                self._redis_run_id,
                block_ms=BURST_BLOCK_MS if self.burst else BLOCK_MS,
                observer=observer,
            )
            for queue in self._stored
        ]

    async def _until_done(self, loop: Any) -> None:
        await loop()
        self._stop.set()  # burst: a lane returned because the queues are empty

    def _spawn(self, started: StartResult) -> None:
        # A plain asyncio task per run (cheaper than an anyio task-group child);
        # the worker tracks them, and waits for them at shutdown via its slots
        # (the runner gives each run's slot back, and logs a failure of its own).
        loop = self._loop
        assert loop is not None  # runs are spawned only while the worker runs
        task = loop.create_task(self._runner.run(started))
        self._run_tasks.add(task)
        task.add_done_callback(self._run_tasks.discard)

    async def _drain(self) -> None:
        """Let in-flight runs finish within the grace period, then hand them back."""
        if self._slots.busy and not self._force:
            log.info(
                "worker_draining",
                in_flight=self._slots.busy,
                grace_period=self.grace_period,
            )
            with anyio.move_on_after(self.grace_period):
                await self._slots.wait_idle()
        if self._slots.busy:
            log.warning("worker_handing_back", in_flight=self._slots.busy)
            self._leases.cancel_all()
            await self._slots.wait_idle()

    async def _hand_back_pending(self) -> None:
        """Entries delivered to us but never started (a read cut by shutdown) go
        back to their queue; then our consumer is deleted if it holds nothing."""
        for queue in self._stored:
            try:
                released = await self._store.release_pending(queue, self.consumer)
                if released:
                    log.info("entries_handed_back", queue=queue, count=released)
                await self._store.delete_consumer(queue, self.consumer)
            except StoreError as exc:
                log.warning("hand_back_failed", queue=queue, error=str(exc))

    async def _queues_drained(self) -> bool:
        """Burst mode: True once nothing is waiting, running or scheduled."""
        if not self.burst or self._slots.busy:
            return False
        if await self._store.events_unrouted():  # they may make or resume runs
            return False
        for queue in self._stored:
            if self._timers != "real":
                moved, _ = await self._store.fire_timers(queue, self._timers)
                if moved:
                    return False
            stats = await self._store.queue_stats(queue)
            if stats.waiting or stats.running or stats.scheduled:
                return False
            # Runs that sleep or wait with a timeout come back on their own;
            # runs waiting for an event or a child with none need someone else.
            if self._timers == "real" and await self._store.timed_suspended(queue):
                return False
        return True

    async def _subscribe(self) -> None:
        """Record this app's on_event jobs, and drop the subscriptions its jobs
        no longer have (a deploy that removed an ``on_event`` name): otherwise
        every worker's router would go on making runs for it."""
        subs = self.app.registry.subscriptions()
        await self._store.subscribe(subs)
        mine = set(self.app.registry.names())
        wanted = {(name, job) for name, jobs in subs.items() for job, _ in jobs}
        stale = [
            (name, job)
            for name, jobs in (await self._store.subscriptions()).items()
            for job, _ in jobs
            if job in mine and (name, job) not in wanted
        ]
        if stale:
            log.info("event subscriptions dropped", pairs=stale)
        await self._store.unsubscribe(stale)

    async def _startup_checks(self) -> None:
        """Refuse Redis < 7; warn loudly where Redis would lose runs."""
        await self._store.ping()
        if self._store.memory:
            return
        info = await self._store.server_info()
        self._redis_run_id = info.get("run_id", "")
        version = info.get("redis_version", "")
        if version and int(version.split(".")[0]) < 7:
            raise ConfigError(
                f"stackshift needs Redis 7.0 or newer; this server is {version}"
            )
        policy = info.get("maxmemory_policy")
        if policy and policy != "noeviction":
            log.critical(
                "redis_eviction_policy",
                policy=policy,
                detail="maxmemory-policy must be noeviction: Redis may evict "
                "runs, steps and idempotency keys under memory pressure",
            )
        if info.get("aof_enabled") == "0":
            # INFO cannot tell whether snapshots are configured (CONFIG GET is
            # usually denied to applications): warn about the AOF alone.
            log.warning(
                "redis_without_aof",
                detail="appendonly is off: a Redis restart loses the runs written "
                "since its last snapshot (or all of them without snapshots)",
            )
