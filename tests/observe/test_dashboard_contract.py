"""deploy/grafana's dashboard and deploy/'s probes against what a real worker
serves: every series a panel queries, with the label values it filters on."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stackshift import JobContext, Stackshift
from tests.deploy.check_grafana import METRICS, expressions
from tests.deploy.manifests import GRAFANA_DASHBOARD, LIVENESS_PATH, READINESS_PATH
from tests.support.workers import running_worker

from .scrape import get

SERIES_RE = re.compile(r"\bstackshift_[a-z0-9_]+\b")
SELECTOR_RE = re.compile(r"\b(stackshift_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|=)\s*"([^"]*)"')


async def test_the_dashboard_queries_only_series_the_worker_serves(
    app: Stackshift,
) -> None:
    @app.job("noop")
    async def noop(ctx: JobContext[Any]) -> None:
        await ctx.step.run("one", int)

    async with running_worker(
        app, ["d"], metrics_port=0, metrics_host="127.0.0.1"
    ) as worker:
        await (await app.queue("d").enqueue("noop")).result(timeout=10)
        text = (await get(worker, "/metrics")).text
        probes = [await get(worker, p) for p in (LIVENESS_PATH, READINESS_PATH)]
    assert [p.status_code for p in probes] == [200, 200]

    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [s for f in families.values() for s in f.samples]
    # Each metric of the contract, of its type, with exactly its labels.
    for name, (kind, labels) in METRICS.items():
        family = families[name.removesuffix("_total")]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, sample

    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    for where, expr in expressions(dashboard):
        for series in SERIES_RE.findall(expr):
            assert any(s.name == series for s in samples), (where, series)
        for series, matchers in SELECTOR_RE.findall(expr):
            for label, _op, wanted in MATCHER_RE.findall(matchers):
                if "$" in wanted:
                    continue  # a template variable
                for one in wanted.split("|"):
                    assert any(
                        s.name == series and s.labels.get(label) == one for s in samples
                    ), (where, series, label, one)
