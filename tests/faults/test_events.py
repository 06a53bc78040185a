"""Issue 11 under faults: event routing, resuming waiters and cron ticks while
workers are killed with SIGKILL and while Redis executes a script whose reply
never reaches its caller (execute-then-drop). Nothing may be lost, and nothing
made or resumed twice: one run per subscribed job per event, each waiter
resumed once by its own event, one run per cron tick."""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
import redis

from stackshift.store.scripts import load_scripts
from stackshift.worker.cron import tick_run_id
from tests.support.redis_server import RedisServer

from .harness.chaos import Chaos
from .harness.event_apps import CRON_QUEUE, QUEUE
from .harness.event_workers import (
    enqueue_waiters,
    run_hash,
    send_pings,
    start_worker,
    stats,
    stream_idle,
)
from .harness.ledger import Ledger
from .harness.procs import Proc, Processes, wait_for
from .harness.proxy import FaultProxy
from .harness.scenario import report_figures

SHA = {name: script.sha.encode() for name, script in load_scripts().items()}
LEASE = 1.5


def started_or_dead(w: Proc) -> Callable[[], bool]:
    return lambda: bool(w.events("worker_started")) or not w.alive


def wait_ready(workers: list[Proc]) -> None:
    for w in workers:
        wait_for(started_or_dead(w), timeout=30, message=f"{w.name} to start")
        assert w.alive, w.text()[-2000:]


def pending_events(client: redis.Redis, prefix: str, consumer: str) -> int:
    found = client.xpending_range(
        f"{prefix}{{events}}:stream", "stackshift", "-", "+", 1000, consumer
    )
    return len(found)


def read_as(client: redis.Redis, prefix: str, consumer: str, count: int) -> list[str]:
    """Read events from the routing stream as ``consumer``, and never ack them."""
    reply = client.xreadgroup(
        "stackshift", consumer, {f"{prefix}{{events}}:stream": ">"}, count=count
    )
    return [entry_id for _stream, entries in reply or () for entry_id, _f in entries]


def suspended(client: object, prefix: str) -> int:
    return int(client.zcard(f"{prefix}{{{QUEUE}}}:suspended"))  # type: ignore[attr-defined]


class EventOutcome:
    """What the ledger and Redis say about the pings and their waiters."""

    def __init__(self, client: object, prefix: str, ledger: Ledger) -> None:
        self.client = client
        self.prefix = prefix
        self.ledger = ledger

    def subscriber_runs(self) -> dict[int, set[str]]:
        """Event key -> ids of the runs it made (as their handlers saw them)."""
        runs: dict[int, set[str]] = defaultdict(set)
        for e in self.ledger.events():
            if e.step == "sub":
                runs[int(e.value)].add(e.run_id)
        return runs

    def status(self, run_id: str) -> str:
        return run_hash(self.client, self.prefix, QUEUE, run_id).get("status", "")  # type: ignore[arg-type]

    def done(self, events: int, waiters: list[str]) -> bool:
        made = self.subscriber_runs()
        if len(made) < events:
            return False
        if any(self.status(r) != "completed" for ids in made.values() for r in ids):
            return False
        if any(self.status(w) != "completed" for w in waiters):
            return False
        c = self.client
        return stream_idle(c, f"{self.prefix}{{events}}:stream") and stream_idle(  # type: ignore[arg-type]
            c,  # type: ignore[arg-type]
            f"{self.prefix}{{{QUEUE}}}:stream",
        )

    def check(self, events: int, waiters: list[str]) -> dict[str, int]:
        """Assert the invariants; return figures."""
        made = self.subscriber_runs()
        assert sorted(made) == list(range(events)), "an event made no run"
        twice = {k: ids for k, ids in made.items() if len(ids) != 1}
        assert not twice, f"events that made more than one run: {twice}"
        got: dict[str, set[str]] = defaultdict(set)
        for e in self.ledger.events():
            if e.step == "w":
                got[e.run_id].add(e.value)
        for k, run_id in enumerate(waiters):
            record = run_hash(self.client, self.prefix, QUEUE, run_id)  # type: ignore[arg-type]
            assert record.get("status") == "completed", (run_id, record)
            assert json.loads(record["result"]) == {"k": k, "n": k * 3}, record
            # Every attempt after the wait saw the one event that resumed it.
            assert got[run_id] == {json.dumps({"k": k, "n": k * 3}, sort_keys=True)}
        totals = stats(self.client, self.prefix, QUEUE)  # type: ignore[arg-type]
        # Suspended once each (all waited before any event was sent), and no
        # run made but the waiters and one per event.
        assert totals.get("suspended") == len(waiters), totals
        assert totals.get("enqueued") == len(waiters) + events, totals
        assert totals.get("completed") == len(waiters) + events, totals
        attempts = sum(
            int(run_hash(self.client, self.prefix, QUEUE, r).get("attempt", 0))  # type: ignore[arg-type]
            for r in waiters
        )
        return {"events": events, "waiters": len(waiters), "waiter_attempts": attempts}


@pytest.mark.timeout(150)
def test_events_route_and_resume_once_while_workers_are_killed(
    durable_redis: RedisServer,
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    chaos: Chaos,
) -> None:
    """40 waiters, 80 events sent in batches; after each batch a random
    worker (event router, runner) is killed with SIGKILL and replaced."""
    procs = procs_factory(durable_redis.url)
    workers = [start_worker(procs, lease=LEASE) for _ in range(3)]
    wait_ready(workers)
    client = durable_redis.client()
    waiters = enqueue_waiters(durable_redis.url, fault_prefix, list(range(40)))
    wait_for(
        lambda: suspended(client, fault_prefix) == 40,
        timeout=30,
        message="every waiter suspended",
    )
    kills = 0
    in_flight = 0  # events a killed router had read and not acknowledged
    for first in range(0, 80, 8):
        alive = [w for w in workers if w.alive]
        # Routers paused while a batch arrives: a "router" that will never
        # route reads two of it (it died at once), the others race for the
        # rest when they go on, and one of them is killed moments later.
        for w in alive:
            w.signal(signal.SIGSTOP)
        dup = send_pings(durable_redis.url, fault_prefix, list(range(first, first + 8)))
        assert not any(dup)
        in_flight += len(read_as(client, fault_prefix, f"ghost{first}", 2))
        for w in alive:
            w.signal(signal.SIGCONT)
        time.sleep(chaos.uniform(0.0, 0.05))  # chaos: the moment of the kill
        victim = chaos.choice(alive)
        victim.kill()
        kills += 1
        in_flight += pending_events(client, fault_prefix, victim.name)
        workers.append(start_worker(procs, lease=LEASE))
    outcome = EventOutcome(client, fault_prefix, ledger)
    began = time.monotonic()
    wait_for(lambda: outcome.done(80, waiters), timeout=60, message="all routed, done")
    figures = outcome.check(80, waiters)
    report_figures(
        "events_kill_9",
        {
            **figures,
            "kills": kills,
            "events_in_flight_at_kills": in_flight,
            "drain_seconds": round(time.monotonic() - began, 1),
        },
    )


# (script, whether the event sender's connection goes through the proxy, or
# the workers')
DROPS = {
    "event_send": "sender",
    "event_route": "workers",
    "resume": "workers",
    "finish": "workers",  # suspends and completions
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", list(DROPS))
def test_event_script_reply_lost_harms_nothing(
    durable_redis: RedisServer,
    proxy_factory: Callable[[int], FaultProxy],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    target: str,
) -> None:
    """Redis runs the script and its reply is lost (the caller retries on a
    new connection), 3 times, while 20 waiters get 40 events."""
    proxy = proxy_factory(durable_redis.port)
    rule = proxy.arm_drop(b"EVALSHA", SHA[target], times=3)
    through = proxy.url if DROPS[target] == "workers" else durable_redis.url
    procs = procs_factory(durable_redis.url)
    workers = [start_worker(procs, lease=LEASE, url=through) for _ in range(2)]
    wait_ready(workers)
    client = durable_redis.client()
    waiters = enqueue_waiters(durable_redis.url, fault_prefix, list(range(20)))
    wait_for(
        lambda: suspended(client, fault_prefix) == 20,
        timeout=30,
        message="every waiter suspended",
    )
    sender = proxy.url if DROPS[target] == "sender" else durable_redis.url
    for first in range(0, 40, 10):
        dup = send_pings(sender, fault_prefix, list(range(first, first + 10)))
        assert not any(dup), "a lost reply made a first send look like a duplicate"
    outcome = EventOutcome(client, fault_prefix, ledger)
    wait_for(lambda: outcome.done(40, waiters), timeout=60, message="all routed, done")
    assert rule.fired >= 1, "the fault was never injected"
    assert all(w.alive for w in workers), "a worker died of a lost reply"
    figures = outcome.check(40, waiters)
    assert client.xlen(f"{fault_prefix}{{events}}:stream") == 0
    report_figures(f"event_reply_lost_{target}", {**figures, "faults": rule.fired})


@pytest.mark.timeout(120)
def test_cron_makes_one_run_per_tick_while_workers_are_killed_and_replies_lost(
    durable_redis: RedisServer,
    proxy_factory: Callable[[int], FaultProxy],
    procs_factory: Callable[..., Processes],
    fault_prefix: str,
    ledger: Ledger,
    chaos: Chaos,
) -> None:
    """Three workers make a one-second cron's ticks through a proxy that loses
    cron_tick replies; every second or so one is killed and replaced. Each
    tick makes one run, and no tick is skipped while any worker lives."""
    proxy = proxy_factory(durable_redis.port)
    rule = proxy.arm_drop(b"EVALSHA", SHA["cron_tick"], times=4)
    procs = procs_factory(durable_redis.url)

    def spawn() -> Proc:
        return start_worker(procs, queue=CRON_QUEUE, lease=LEASE, url=proxy.url)

    workers = [spawn() for _ in range(3)]
    wait_ready(workers)
    wait_for(lambda: ledger.count("end") >= 1, timeout=30, message="a first tick")
    kills = 0
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        time.sleep(chaos.uniform(0.3, 1.2))  # chaos: the moment of the next kill
        victim = chaos.choice([w for w in workers if w.alive])
        victim.kill()
        kills += 1
        fresh = spawn()
        workers.append(fresh)
        # Two workers live at every moment: no tick may be skipped.
        wait_ready([fresh])
    wait_ready([w for w in workers if w.alive])
    for w in workers:
        if w.alive:
            w.signal(signal.SIGTERM)  # drain, then exit
    for w in workers:
        if w.alive:
            assert w.wait(30) == 0, w.text()[-2000:]
    assert rule.fired >= 1, "the fault was never injected"
    client = durable_redis.client()

    def runs_per_tick() -> dict[int, set[str]]:
        per: dict[int, set[str]] = defaultdict(set)
        for e in ledger.events():
            if e.step == "tick":
                per[int(e.value)].add(e.run_id)
        return per

    per = runs_per_tick()
    ticks = sorted(per)
    # Runs of the last ticks may still be queued: a worker finishes them.
    last = start_worker(procs, queue=CRON_QUEUE, lease=LEASE)

    def all_ran() -> bool:
        statuses = [
            run_hash(
                client, fault_prefix, CRON_QUEUE, tick_run_id(CRON_QUEUE, "tick", t)
            ).get("status")
            for t in range(ticks[0], ticks[-1] + 1000, 1000)
        ]
        return all(s == "completed" for s in statuses)

    wait_for(all_ran, timeout=30, message="every tick's run completed")
    last.signal(signal.SIGTERM)
    per = runs_per_tick()
    made = [t for t in per if t <= ticks[-1]]
    twice = {t: ids for t, ids in per.items() if len(ids) != 1}
    assert not twice, f"ticks with more than one run: {twice}"
    for t in made:
        assert per[t] == {tick_run_id(CRON_QUEUE, "tick", t)}
    gaps = [b - a for a, b in zip(sorted(made), sorted(made)[1:], strict=False)]
    assert all(g == 1000 for g in gaps), f"ticks skipped while workers lived: {gaps}"
    state = {
        k.decode(): v.decode()
        for k, v in client.hgetall(f"{fault_prefix}{{{CRON_QUEUE}}}:cron:tick").items()
    }
    assert state.get("missed", "0") == "0", state
    enqueued = stats(client, fault_prefix, CRON_QUEUE).get("enqueued")
    assert enqueued is not None and enqueued >= len(made)
    report_figures(
        "cron_kill_9_reply_lost",
        {"ticks": len(made), "kills": kills, "faults": rule.fired},
    )
