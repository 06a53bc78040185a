"""Checks on deploy/grafana/stackshift-dashboard.json.

The metric names, their labels and label values are DESIGN.md §7's: a query on
a name or label the worker does not export shows an empty panel and no error,
so each one is checked here instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .manifests import Doc

# DESIGN.md §7: name -> (type, labels).
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "stackshift_runs_started_total": ("counter", frozenset({"queue", "job"})),
    "stackshift_runs_finished_total": (
        "counter",
        frozenset({"queue", "job", "outcome"}),
    ),
    "stackshift_run_duration_seconds": ("histogram", frozenset({"queue", "job"})),
    "stackshift_step_duration_seconds": ("histogram", frozenset({"job"})),
    "stackshift_queue_runs": ("gauge", frozenset({"queue", "status"})),
    "stackshift_queue_latency_seconds": ("gauge", frozenset({"queue"})),
    "stackshift_runs_reclaimed_total": ("counter", frozenset({"queue"})),
    "stackshift_leases_lost_total": ("counter", frozenset({"queue"})),
}
LABEL_VALUES = {
    "outcome": frozenset({"completed", "retried", "failed", "cancelled", "suspended"}),
    "status": frozenset({"queued", "running", "scheduled", "suspended", "dead"}),
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"instance", "service", "pod", "namespace"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
BUILTIN_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__all"})
PANEL_TYPES = frozenset(
    {"row", "timeseries", "stat", "gauge", "bargauge", "table", "text", "heatmap"}
)
REQUIRED_VARIABLES = ("datasource", "queue", "job")
GRID_WIDTH = 24

_METRIC_RE = re.compile(r"\bstackshift_[a-z0-9_]+\b")
_SELECTOR_RE = re.compile(r"\b(stackshift_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_VARIABLE_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def base_metric(series: str) -> tuple[str | None, str]:
    """The contract metric behind a series name, and what is wrong with it if anything."""
    if series in METRICS:
        if METRICS[series][0] == "histogram":
            return (
                None,
                f"{series} is a histogram: query {series}_bucket, _sum or _count",
            )
        return series, ""
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and METRICS.get(base, ("",))[0] == "histogram":
            return base, ""
    return None, f"{series} is not a DESIGN.md §7 metric"


def labels_of(series: str) -> frozenset[str]:
    base, _ = base_metric(series)
    if base is None:
        return frozenset()
    extra = {"le"} if series.endswith("_bucket") else set()
    return METRICS[base][1] | extra | TARGET_LABELS


def expression_problems(expr: str) -> list[str]:
    """Metric names, label names and label values of one PromQL expression."""
    problems = [
        problem
        for series in _METRIC_RE.findall(expr)
        if (problem := base_metric(series)[1])
    ]
    known: set[str] = set()
    for series, matchers in _SELECTOR_RE.findall(expr):
        labels = labels_of(series)
        known |= labels
        for label, operator, value in _MATCHER_RE.findall(matchers):
            if label not in labels:
                problems.append(f"{series} has no label {label!r}")
            elif label in LABEL_VALUES and operator in ("=", "=~") and "$" not in value:
                unknown = set(value.split("|")) - LABEL_VALUES[label]
                problems += [
                    f"{series}: {label} is never {v!r}" for v in sorted(unknown)
                ]
    for series in set(_METRIC_RE.findall(expr)):
        known |= labels_of(series)
    for grouping in _GROUPING_RE.findall(expr):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            if label not in known:
                problems.append(
                    f"grouping by {label!r}, a label of none of the metrics"
                )
    return problems


def panels(dashboard: Doc) -> Iterator[Doc]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: Doc) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel query and template variable query."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield (
                f"panel {panel.get('title')!r} {target.get('refId')}",
                str(target.get("expr", "")),
            )
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            yield f"variable {variable.get('name')}", text


def metric_problems(dashboard: Doc) -> list[str]:
    """Every metric queried is a contract metric, used with its own labels, and
    every contract metric is shown somewhere."""
    problems = [
        f"{where}: {p}"
        for where, expr in expressions(dashboard)
        for p in expression_problems(expr)
    ]
    used = {
        base_metric(s)[0]
        for _, expr in expressions(dashboard)
        for s in _METRIC_RE.findall(expr)
    }
    problems += [f"{name} is on no panel" for name in METRICS if name not in used]
    return problems


def structure_problems(dashboard: Doc) -> list[str]:
    """What Grafana's JSON model needs to import the dashboard and lay it out."""
    problems = [
        f"top level: no {key!r}"
        for key in ("uid", "title", "schemaVersion", "panels", "templating")
        if key not in dashboard
    ]
    if (
        not isinstance(dashboard.get("schemaVersion"), int)
        or dashboard["schemaVersion"] < 36
    ):
        problems.append("schemaVersion must be an integer of Grafana 9 or later (36+)")
    problems += _variable_problems(dashboard)
    problems += _panel_problems(dashboard)
    return problems


def _variable_problems(dashboard: Doc) -> list[str]:
    variables = {
        v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])
    }
    problems = [
        f"no template variable {name!r}"
        for name in REQUIRED_VARIABLES
        if name not in variables
    ]
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append("variable datasource must be of type datasource (prometheus)")
    problems += [
        f"variable {name} must be a query variable"
        for name in ("queue", "job")
        if name in variables and variables[name].get("type") != "query"
    ]
    defined = set(variables) | BUILTIN_VARIABLES
    for where, expr in expressions(dashboard):
        problems += [
            f"{where}: ${v} is not defined"
            for v in _VARIABLE_RE.findall(expr)
            if v not in defined
        ]
    return problems


def _panel_problems(dashboard: Doc) -> list[str]:
    problems: list[str] = []
    ids = [panel.get("id") for panel in panels(dashboard)]
    problems += [
        f"panel id {i} is used twice"
        for i in sorted({i for i in ids if ids.count(i) > 1}, key=str)
    ]
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        name = f"panel {panel.get('title')!r}"
        if panel.get("type") not in PANEL_TYPES:
            problems.append(f"{name}: unknown type {panel.get('type')!r}")
        problems += _grid_problems(name, panel.get("gridPos", {}), cells)
        if panel.get("type") != "row":
            problems += _query_problems(name, panel)
    return problems


def _grid_problems(
    name: str, grid: dict[str, Any], cells: dict[tuple[int, int], str]
) -> list[str]:
    if not all(isinstance(grid.get(k), int) for k in "hwxy"):
        return [f"{name}: gridPos needs integer h, w, x, y"]
    if (
        grid["x"] < 0
        or grid["w"] < 1
        or grid["h"] < 1
        or grid["x"] + grid["w"] > GRID_WIDTH
    ):
        return [f"{name}: gridPos {grid} is off the 24-column grid"]
    problems = []
    for x in range(grid["x"], grid["x"] + grid["w"]):
        for y in range(grid["y"], grid["y"] + grid["h"]):
            if (x, y) in cells:
                problems.append(f"{name}: overlaps {cells[(x, y)]}")
                return problems
            cells[(x, y)] = name
    return problems


def _query_problems(name: str, panel: Doc) -> list[str]:
    problems = []
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        problems.append(f"{name}: datasource is not the ${{datasource}} variable")
    targets = panel.get("targets", [])
    if not targets:
        problems.append(f"{name}: no query")
    ref_ids = [t.get("refId") for t in targets]
    if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
        problems.append(f"{name}: refIds must be present and distinct")
    problems += [
        f"{name}: a query has no expr"
        for t in targets
        if not str(t.get("expr", "")).strip()
    ]
    return problems
