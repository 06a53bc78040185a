"""The invariant checker, run once a scenario has quiesced.

It reads Redis (the state the system under test left) and the effects ledger
(what handlers did, written outside Redis) and reports every violation:

- I1 no run lost: every acknowledged run is completed, or failed and in the
  dead letter set.
- I2 one record per step: every value a handler got back from ``step.run`` for a
  (run, step) is the recorded one, which a step body produced.
- I3 no start after commit: no step body started in a later attempt than the one
  that recorded it, nor after the recording attempt had its value back.
- I4 counters exact.
- I5 clean queue: group PEL empty, stream empty (acked entries are deleted),
  nothing left scheduled, completion counted once per run.
- I6 one run per idempotency key: every caller got the same run id.
- I7 bounded keys: no run, steps, idempotency or counter-mark key without TTL.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis

from .ledger import Event, Ledger

GROUP = "stackshift"
_EXPIRING = re.compile(r":(run|steps|idem):|:seen:")


@dataclasses.dataclass
class Expectations:
    """What the scenario promised and expects."""

    queue: str = "faults"
    runs: set[str] = dataclasses.field(default_factory=set)
    # run ids each caller got back, per idempotency key
    keys: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    allow_dead: bool = False
    check_steps: bool = True  # the runs are multistep runs with a ledger
    check_empty_stream: bool = True

    def add_acked(self, acked: Iterable[tuple[str, str, bool]]) -> None:
        for key, run_id, _dedup in acked:
            self.runs.add(run_id)
            self.keys.setdefault(key, set()).add(run_id)


@dataclasses.dataclass
class Report:
    violations: list[str]
    figures: dict[str, Any]

    def __bool__(self) -> bool:
        return not self.violations

    def explain(self) -> str:
        shown = self.violations[:40]
        more = len(self.violations) - len(shown)
        text = "\n".join(f"  - {v}" for v in shown)
        if more > 0:
            text += f"\n  ... and {more} more"
        return f"{len(self.violations)} invariant violation(s):\n{text}\nfigures: {self.figures}"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def run_states(
    client: redis.Redis, prefix: str, queue: str, runs: Iterable[str]
) -> dict[str, str]:
    """status of each run ('' if it has neither a record nor a place in the
    queue's index of runs queued without a record: keys.py, queued_index)."""
    ids = list(runs)
    q = f"{prefix}{{{queue}}}:"
    pipe = client.pipeline(transaction=False)
    for run_id in ids:
        pipe.hget(f"{q}run:{run_id}", "status")
        pipe.hexists(f"{q}queued:{run_id[:10]}", run_id[10:26])
    replies = pipe.execute()
    states = {}
    for i, run_id in enumerate(ids):
        status, indexed = replies[2 * i], replies[2 * i + 1]
        states[run_id] = _s(status) if status else ("queued" if indexed else "")
    return states


def all_finished(
    client: redis.Redis, prefix: str, queue: str, runs: Iterable[str]
) -> bool:
    states = run_states(client, prefix, queue, runs)
    return all(s in ("completed", "failed") for s in states.values())


def check(
    client: redis.Redis, prefix: str, expect: Expectations, ledger: Ledger | None
) -> Report:
    q = f"{prefix}{{{expect.queue}}}:"
    figures: dict[str, Any] = {"runs": len(expect.runs)}
    v, completed = _check_runs(client, prefix, q, expect, figures)
    if expect.check_steps and ledger is not None:
        v += _check_steps(client, q, completed, ledger, figures)
    v += _check_counters(client, prefix, expect, figures)
    v += _check_queue(client, q, expect, completed, figures)
    v += _check_keys(client, q, expect)
    v += check_ttls(client, prefix)
    figures["keys"] = client.dbsize()
    return Report(v, figures)


def _check_runs(
    client: redis.Redis,
    prefix: str,
    q: str,
    expect: Expectations,
    figures: dict[str, Any],
) -> tuple[list[str], set[str]]:
    """I1: no run lost."""
    v: list[str] = []
    states = run_states(client, prefix, expect.queue, expect.runs)
    dead = {_s(x) for x in client.zrange(q + "dead", 0, -1)}
    completed = {r for r, s in states.items() if s == "completed"}
    figures["completed"] = len(completed)
    figures["dead_lettered"] = sum(1 for s in states.values() if s == "failed")
    for run_id, status in states.items():
        if status == "failed":
            if not expect.allow_dead:
                v.append(f"I1 run {run_id} was dead-lettered")
            if run_id not in dead:
                v.append(f"I1 run {run_id} failed but is not in the dead letter set")
        elif status != "completed":
            v.append(f"I1 run {run_id} lost: status {status or 'no record'!r}")
    return v, completed


def _check_counters(
    client: redis.Redis, prefix: str, expect: Expectations, figures: dict[str, Any]
) -> list[str]:
    """I4: counters exact."""
    v: list[str] = []
    for name, want in expect.counters.items():
        got = client.hget(f"{prefix}{{c:{name}}}", "value")
        value = int(got) if got is not None else 0
        figures[f"counter {name}"] = value
        if value != want:
            v.append(f"I4 counter {name} is {value}, expected {want}")
    return v


def _check_queue(
    client: redis.Redis,
    q: str,
    expect: Expectations,
    completed: set[str],
    figures: dict[str, Any],
) -> list[str]:
    """I5: PEL empty, stream empty, nothing scheduled, one completion per run."""
    v: list[str] = []
    stream = q + "stream"
    if client.exists(stream):
        pending = client.xpending(stream, GROUP)
        if pending["pending"]:
            v.append(f"I5 {pending['pending']} entries still pending: {pending}")
        length = client.xlen(stream)
        figures["xlen"] = length
        if expect.check_empty_stream and length:
            v.append(f"I5 stream still holds {length} entries")
    scheduled = client.zcard(q + "delayed")
    if scheduled:
        v.append(f"I5 {scheduled} runs still scheduled")
    stats = {_s(k): int(x) for k, x in client.hgetall(q + "stats").items()}
    figures["stats"] = stats
    if stats.get("completed", 0) != len(completed):
        v.append(
            f"I5 completions counted {stats.get('completed', 0)} times for "
            f"{len(completed)} completed runs (a run completed twice?)"
        )
    return v


def _check_keys(client: redis.Redis, q: str, expect: Expectations) -> list[str]:
    """I6: one run per idempotency key."""
    v: list[str] = []
    for key, seen in expect.keys.items():
        if len(seen) != 1:
            v.append(f"I6 key {key!r} made runs {sorted(seen)}")
        stored = client.get(q + "idem:" + key)
        if stored is not None and _s(stored) not in seen:
            v.append(
                f"I6 key {key!r} points at {_s(stored)}, callers got {sorted(seen)}"
            )
    return v


def check_ttls(client: redis.Redis, prefix: str) -> list[str]:
    out = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        name = _s(key)
        if not _EXPIRING.search(name):
            continue
        ttl = client.pttl(key)
        if ttl == -1:
            # a run still queued or running legitimately has no TTL yet
            if ":run:" in name and _s(client.hget(key, "status") or b"") not in (
                "completed",
                "failed",
            ):
                continue
            if ":steps:" in name:
                run = name.replace(":steps:", ":run:")
                if _s(client.hget(run, "status") or b"") not in ("completed", "failed"):
                    continue
            out.append(f"I7 key {name} has no TTL")
    return out


def _check_steps(
    client: redis.Redis,
    q: str,
    completed: set[str],
    ledger: Ledger,
    figures: dict[str, Any],
) -> list[str]:
    v: list[str] = []
    by_step = ledger.by_step()
    step_runs: dict[str, dict[str, dict[str, Any]]] = {}
    pipe = client.pipeline(transaction=False)
    ids = sorted(completed)
    for run_id in ids:
        pipe.hgetall(q + "steps:" + run_id)
        pipe.hget(q + "run:" + run_id, "result")
    replies = pipe.execute()
    bodies = 0
    repeats = 0
    for i, run_id in enumerate(ids):
        raw_steps, raw_result = replies[2 * i], replies[2 * i + 1]
        records = {_s(k): json.loads(x) for k, x in raw_steps.items()}
        step_runs[run_id] = records
        result = json.loads(raw_result) if raw_result else None
        names = sorted(records, key=lambda s: int(s[1:]) if s[1:].isdigit() else 0)
        if result is not None and isinstance(result, list):
            expected = [records[n]["v"] for n in names]
            if result != expected:
                v.append(
                    f"I2 run {run_id} returned {result}, recorded steps {expected}"
                )
        for step, record in records.items():
            events = by_step.get((run_id, step), [])
            v += _check_one_step(run_id, step, record, events)
            starts = sum(1 for e in events if e.event == "start")
            bodies += starts
            repeats += max(0, starts - 1)
    figures["step_bodies"] = bodies
    figures["step_bodies_repeated"] = repeats
    return v


def _check_one_step(
    run_id: str, step: str, record: dict[str, Any], events: list[Event]
) -> list[str]:
    v: list[str] = []
    value = record["v"]
    committed_in = int(record["a"])
    ends = {e.value for e in events if e.event == "end"}
    if value not in ends:
        v.append(
            f"I2 {run_id}/{step}: recorded {value!r} was produced by no step body ({sorted(ends)})"
        )
    got = [e for e in events if e.event == "got"]
    v.extend(
        f"I2 {run_id}/{step}: attempt {e.attempt} (pid {e.pid}) got {e.value!r}, "
        f"the record is {value!r} (overwritten?)"
        for e in got
        if e.value != value
    )
    # A stale attempt (a zombie that loaded the steps before the record) may
    # still run the body: P2 allows it. A later attempt may not.
    v.extend(
        f"I3 {run_id}/{step}: attempt {e.attempt} (pid {e.pid}) started it after "
        f"attempt {committed_in} recorded it"
        for e in events
        if e.event == "start" and e.attempt > committed_in
    )
    same = [e for e in events if e.event == "start" and e.attempt == committed_in]
    if len(same) > 1:
        v.append(
            f"I3 {run_id}/{step}: started {len(same)} times in attempt {committed_in}"
        )
    return v


def steps_executed_per_run(ledger: Ledger) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for e in ledger.events():
        if e.event == "start":
            counts[e.run_id] += 1
    return counts
