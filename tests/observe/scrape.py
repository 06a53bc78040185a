"""Scraping a worker's probe server over real HTTP, and reading the samples."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stackshift import Worker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def get(worker: Worker, path: str) -> httpx.Response:
    address = worker.metrics_address
    assert address is not None, "the worker serves no metrics"
    host, port = address
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://{host}:{port}{path}")


async def scrape(worker: Worker) -> Samples:
    """Every sample /metrics shows, by (name, labels)."""
    response = await get(worker, "/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value (None: not shown)."""
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _labels in samples}
