"""Summaries (min / median / max of the repetitions) and the printed tables."""

from __future__ import annotations

import statistics
from typing import Any

# (table column, cell column, metric), in print order; two tables keep it legible.
THROUGHPUT = [
    ("W1 enq/s", "W1", "jobs_per_s"),
    ("W1b enq/s", "W1b", "jobs_per_s"),
    ("W2 jobs/s", "W2", "jobs_per_s"),
    ("W2 c=100", "W2@100", "jobs_per_s"),
    ("W5 1 proc", "W5x1", "jobs_per_s"),
    ("W5 2 procs", "W5x2", "jobs_per_s"),
    ("W5 4 procs", "W5x4", "jobs_per_s"),
]
COSTS = [
    ("W3 p50 ms", "W3", "p50_ms"),
    ("W3 p99 ms", "W3", "p99_ms"),
    ("W4 ms/run", "W4", "ms_per_run"),
    ("W4 ms/step", "W4", "ms_per_step"),
    ("W6 µs/run deep", "W6deep", "us_per_run"),
    ("W6 µs/run shallow", "W6shallow", "us_per_run"),
    ("W7 B/queued", "W7", "bytes_per_queued"),
    ("W7 B/finished", "W7", "bytes_per_finished"),
    ("W7 RSS MB", "W7", "worker_rss_mb"),
]
# Events and durable time (issue #11).
EVENTS = [
    ("W8 p50 ms", "W8", "p50_ms"),
    ("W8 p99 ms", "W8", "p99_ms"),
    ("W10 1→N resumes/s", "W10one", "resumes_per_s"),
    ("W10 N→N resumes/s", "W10each", "resumes_per_s"),
    ("W4i ms/run", "W4i", "ms_per_run"),
    ("W4i ms/child", "W4i", "ms_per_step"),
]
TIME = [
    ("W9 late p50 ms", "W9", "p50_ms"),
    ("W9 late p99 ms", "W9", "p99_ms"),
    ("W9 B/sleeping", "W9hold", "bytes_per_suspended"),
    ("W9 worker CPU ms/s", "W9hold", "worker_cpu_ms_per_s"),
    ("W9 Redis CPU ms/s", "W9hold", "redis_cpu_ms_per_s"),
    ("W11 runs/tick min", "W11", "runs_per_tick_min"),
    ("W11 runs/tick max", "W11", "runs_per_tick_max"),
    ("W11 late p50 ms", "W11", "p50_ms"),
    ("W11 late p99 ms", "W11", "p99_ms"),
]
# The metric shown while a cell runs: the first its result has.
HEADLINE = {
    "W1": ("jobs_per_s",),
    "W1b": ("jobs_per_s",),
    "W2": ("jobs_per_s",),
    "W3": ("p50_ms",),
    "W4": ("ms_per_run",),
    "W4i": ("ms_per_run",),
    "W5": ("jobs_per_s",),
    "W6": ("us_per_run",),
    "W7": ("bytes_per_queued",),
    "W8": ("p50_ms",),
    "W9": ("p99_ms", "bytes_per_suspended"),
    "W10": ("resumes_per_s",),
    "W11": ("runs_per_tick_max",),
}


def headline(workload: str, result: dict[str, Any]) -> str:
    metrics = HEADLINE[workload]
    metric = next((m for m in metrics if m in result), metrics[0])
    return f"{metric}={_fmt(float(result.get(metric, float('nan'))))}"


def summarise(records: list[dict[str, Any]]) -> None:
    """Add ``summary``: {metric: {min, median, max}} over the successful runs."""
    for record in records:
        ok = [run for run in record["runs"] if "error" not in run]
        metrics = {k for run in ok for k, v in run.items() if isinstance(v, float)}
        record["summary"] = {
            m: {
                "min": min(values),
                "median": statistics.median(values),
                "max": max(values),
            }
            for m in sorted(metrics)
            if (values := [float(run[m]) for run in ok if m in run])
        }
        record["errors"] = [run["error"] for run in record["runs"] if "error" in run]


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(record: dict[str, Any] | None, metric: str) -> str:
    if record is None:
        return ""
    s = record.get("summary", {}).get(metric)
    if s is None:
        return "failed" if record.get("errors") else ""
    if s["min"] == s["max"]:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}–{_fmt(s['max'])})"


def _one(records: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    systems = list(dict.fromkeys(r["system"] for r in records))
    by = {(r["system"], r["column"]): r for r in records}
    present = [c for c in columns if any((s, c[1]) in by for s in systems)]
    if not present:
        return ""
    head = ["system", *(c[0] for c in present)]
    rows = [
        [system, *(_cell(by.get((system, col)), metric) for _, col, metric in present)]
        for system in systems
    ]
    rows = [row for row in rows if any(row[1:])]  # systems without these workloads
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def ratios(
    records: list[dict[str, Any]], system: str = "stackshift", baseline: str = "raw"
) -> str:
    """stackshift's medians against a raw baseline of the same run."""
    by = {(r["system"], r["column"]): r for r in records}
    parts = []
    for label, col, metric in THROUGHPUT + COSTS:
        mine = by.get((system, col), {}).get("summary", {}).get(metric)
        raw = by.get((baseline, col), {}).get("summary", {}).get(metric)
        if mine and raw and raw["median"]:
            parts.append(f"{label}: {mine['median'] / raw['median']:.2f}×")
    return f"{system} / {baseline} (medians): " + ", ".join(parts) if parts else ""


def table(records: list[dict[str, Any]]) -> str:
    """Markdown tables: rows are systems, cells median (min–max)."""
    parts = [
        _one(records, THROUGHPUT),
        _one(records, COSTS),
        _one(records, EVENTS),
        _one(records, TIME),
        ratios(records),
        ratios(records, baseline="raw-jobs"),
        ratios(records, system="stackshift-metrics", baseline="stackshift"),
    ]
    return "\n\n".join(p for p in parts if p)
