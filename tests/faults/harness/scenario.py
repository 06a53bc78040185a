"""Helpers shared by the scenarios: quiescence, the final check, figures."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any

import redis

from .chaos import Chaos
from .checker import Expectations, all_finished, check, run_states
from .ledger import Ledger
from .procs import wait_for

FIGURES_ENV = "FAULT_FIGURES"  # a file: each scenario appends its figures (JSON)


def quiesce(
    client: redis.Redis, prefix: str, expect: Expectations, timeout: float
) -> float:
    """Wait until every expected run has finished and nothing is pending;
    returns the seconds it took."""
    began = time.monotonic()
    stream = f"{prefix}{{{expect.queue}}}:stream"

    def done() -> bool:
        if not all_finished(client, prefix, expect.queue, expect.runs):
            return False
        return (
            not client.exists(stream)
            or not client.xpending(stream, "stackshift")["pending"]
        )

    try:
        wait_for(done, timeout=timeout, interval=0.1, message="the runs to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(client, prefix, expect)}") from None
    return time.monotonic() - began


def diagnose(client: redis.Redis, prefix: str, expect: Expectations) -> str:
    """Where the unfinished runs are: statuses, pending entries, consumers."""
    q = f"{prefix}{{{expect.queue}}}:"
    states = run_states(client, prefix, expect.queue, expect.runs)
    histogram = Counter(states.values())
    stuck = [r for r, s in states.items() if s not in ("completed", "failed")][:5]
    lines = [f"run statuses: {dict(histogram)}; e.g. {stuck}"]
    lines += [f"  {r}: {client.hgetall(q + 'run:' + r)}" for r in stuck[:3]]
    if client.exists(q + "stream"):
        pending = client.xpending(q + "stream", "stackshift")
        lines.append(f"xlen {client.xlen(q + 'stream')}, pending {pending}")
        lines.append(f"consumers {client.xinfo_consumers(q + 'stream', 'stackshift')}")
    lines.append(f"delayed {client.zcard(q + 'delayed')}")
    return "\n".join(lines)


def assert_invariants(
    client: redis.Redis,
    prefix: str,
    expect: Expectations,
    ledger: Ledger | None,
    *,
    scenario: str,
    chaos: Chaos | None = None,
    **figures: Any,
) -> dict[str, Any]:
    report = check(client, prefix, expect, ledger)
    report.figures.update(figures)
    report_figures(scenario, report.figures)
    hint = f"\n{chaos.replay_hint()}" if chaos is not None else ""
    assert report, report.explain() + hint
    return report.figures


def report_figures(scenario: str, figures: dict[str, Any]) -> None:
    print(f"[{scenario}] {figures}")
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"scenario": scenario, **figures}, default=str) + "\n")
