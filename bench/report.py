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
    ("W5 2 procs, supervised", "W5s2", "jobs_per_s"),
    ("W5 4 procs, supervised", "W5s4", "jobs_per_s"),
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


# W12: what one completed run costs Redis (enqueue + drain), per concurrency.
def _cost_columns(column: str) -> list[tuple[str, str, str]]:
    return [
        (f"{column} Redis µs/run", column, "redis_cpu_us_per_run"),
        ("enqueue µs", column, "enqueue_redis_cpu_us_per_run"),
        ("drain µs", column, "drain_redis_cpu_us_per_run"),
        ("commands/run", column, "calls_per_run"),
        ("scripts/run", column, "scripts_per_run"),
        ("reads/run", column, "reads_per_run"),
        ("B in/run", column, "bytes_in_per_run"),
        ("AOF B/run", column, "aof_bytes_per_run"),
    ]


COST = _cost_columns("W12")
COST_100 = _cost_columns("W12@100")
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
    "W12": ("redis_cpu_us_per_run",),
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


def commands(records: list[dict[str, Any]], column: str, top: int = 12) -> str:
    """W12's commands per run by name (medians over the runs), dearest first:
    one line per system. Commands run inside scripts are counted by name too."""
    lines = []
    for record in records:
        if record["column"] != column:
            continue
        ok = [run["commands"] for run in record["runs"] if "commands" in run]
        if not ok:
            continue
        names = {name for run in ok for name in run}
        medians = {
            name: statistics.median(float(run.get(name, 0.0)) for run in ok)
            for name in names
        }
        shown = sorted(medians.items(), key=lambda m: -m[1])[:top]
        listed = ", ".join(f"{name} {_fmt(n)}" for name, n in shown)
        lines.append(f"- {record['system']}: {listed}")
    if not lines:
        return ""
    return f"{column} commands per run (inside scripts too):\n" + "\n".join(lines)


def targets(records: list[dict[str, Any]]) -> str:
    """Issue 14 item 8, W2 (medians): stackshift against raw-jobs, the fastest
    peer in its default set-up and the fastest in its lightest."""
    by = {(r["system"], r["column"]): r for r in records}

    def median(system: str, column: str) -> float | None:
        s = by.get((system, column), {}).get("summary", {}).get("jobs_per_s")
        return None if s is None else float(s["median"])

    parts = []
    for column in ("W2", "W2@100"):
        mine = median("stackshift", column)
        if not mine:
            continue
        said = [f"{column}: {_fmt(mine)}"]
        raw = median("raw-jobs", column)
        if raw:
            said.append(f"{mine / raw:.2f}× raw-jobs")
        for light in (False, True):
            peers = {
                r["system"]: m
                for r in records
                if r["column"] == column
                and r["system"] not in ("stackshift", "raw", "raw-jobs")
                and r["system"].endswith("-light") == light
                and (m := median(r["system"], column))
            }
            if peers:
                best = max(peers, key=lambda p: peers[p])
                said.append(f"{mine / peers[best]:.2f}× {best} ({_fmt(peers[best])})")
        parts.append(", ".join(said))
    if not parts:
        return ""
    return "stackshift W2 (medians): " + "; ".join(parts)


def table(records: list[dict[str, Any]]) -> str:
    """Markdown tables: rows are systems, cells median (min–max)."""
    parts = [
        _one(records, THROUGHPUT),
        _one(records, COSTS),
        _one(records, EVENTS),
        _one(records, TIME),
        _one(records, COST),
        _one(records, COST_100),
        commands(records, "W12"),
        commands(records, "W12@100"),
        ratios(records),
        ratios(records, baseline="raw-jobs"),
        ratios(records, system="stackshift-metrics", baseline="stackshift"),
        targets(records),
    ]
    return "\n\n".join(p for p in parts if p)
