"""Screenshots of every page for docs/dashboard.md, taken on demand:

    STACKSHIFT_SCREENSHOTS=1 .venv/bin/pytest tests/dashboard/test_screenshots.py -q

It fills a queue or two with real runs (a real worker, the real Redis), serves
the dashboard and saves one PNG per page in docs/dashboard/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from stackshift import JobContext, NonRetriableError, Stackshift
from tests.dashboard.conftest import ROOT
from tests.support.processes import wait_status
from tests.support.workers import running_worker

on_demand = pytest.mark.skipif(
    os.environ.get("STACKSHIFT_SCREENSHOTS") != "1",
    reason="on demand: STACKSHIFT_SCREENSHOTS=1 (writes docs/dashboard/*.png)",
)
OUT = ROOT / "docs" / "dashboard"


async def download_file(file_id: str) -> dict[str, Any]:
    await anyio.sleep(0.12)  # sync-ok: simulated work for the screenshots
    return {"file_id": file_id, "bytes": 48213}


async def parse_file(file: dict[str, Any]) -> int:
    await anyio.sleep(0.3)  # sync-ok: simulated work for the screenshots
    return 1200


async def mark_complete(file_id: str) -> bool:
    await anyio.sleep(0.05)  # sync-ok: simulated work for the screenshots
    return True


def define_jobs(app: Stackshift) -> None:
    @app.job("processUpload")
    async def process_upload(ctx: JobContext[dict[str, str]]) -> dict[str, int]:
        file = await ctx.step.run("download-file", download_file, ctx.payload["fileId"])
        rows = await ctx.step.run("parse-file", parse_file, file)
        await ctx.state.increment(f"files:{ctx.payload['fileId']}:rows", rows)
        await ctx.step.run("mark-complete", mark_complete, ctx.payload["fileId"])
        return {"rows": rows}

    @app.job("sendVerificationEmail", retries=0)
    async def send_email(ctx: JobContext[dict[str, str]]) -> None:
        await ctx.step.run("render-template", mark_complete, ctx.payload["userId"])
        raise NonRetriableError(
            "SMTP 550: mailbox unavailable for " + ctx.payload["email"]
        )


async def shoot(page: Any, url: str, name: str) -> None:
    await page.goto(url)
    await page.wait_for_load_state("load")
    await page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


@on_demand
async def test_screenshots_of_every_page(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    define_jobs(app)
    async with running_worker(app, ["uploads", "emails"]):
        done = [
            await app.queue("uploads").enqueue(
                "processUpload", {"fileId": f"f_{i}"}, correlation_id=f"import-{i}"
            )
            for i in range(1, 4)
        ]
        for handle in done:
            await handle.result(timeout=15)
        failed = [
            await app.queue("emails").enqueue(
                "sendVerificationEmail",
                {"userId": f"user_{i}", "email": f"user{i}@example.com"},
                idempotency_key=f"verify:user_{i}",
            )
            for i in range(1, 4)
        ]
        for handle in failed:
            await wait_status(app, handle.run_id, "failed", within=15)
    # Waiting for a worker: what the queue page shows as queued.
    await app.queue("uploads").enqueue_many(
        "processUpload", [{"fileId": f"f_{i}"} for i in range(10, 17)]
    )
    url = serve_dashboard(queues=["uploads", "emails"], title="stackshift · acme")
    await page.set_viewport_size({"width": 1280, "height": 760})
    await shoot(page, url + "/", "queues")
    await shoot(page, url + "/runs?queue=uploads&status=completed", "runs")
    await shoot(page, f"{url}/runs/{done[0].run_id}", "run")
    await shoot(page, f"{url}/runs/{failed[0].run_id}", "run-failed")
    await shoot(page, url + "/dead?queue=emails", "dead-letters")
    await shoot(page, url + "/dead/retry-all?queue=emails", "retry-all")
    await shoot(page, url + "/counters?key=files:f_1:rows", "counters")
    await shoot(page, url + "/events", "events")
    await shoot(page, url + "/crons", "crons")
    assert sorted(p.name for p in OUT.glob("*.png")) == sorted(
        f"{n}.png"
        for n in [
            "queues",
            "runs",
            "run",
            "run-failed",
            "dead-letters",
            "retry-all",
            "counters",
            "events",
            "crons",
        ]  # fmt: skip
    )


def test_the_docs_embed_every_screenshot_and_nothing_else() -> None:
    text = (ROOT / "docs" / "dashboard.md").read_text()
    embedded = set(re.findall(r"\]\(dashboard/([a-z-]+\.png)\)", text))
    assert embedded and embedded == {png.name for png in Path(OUT).glob("*.png")}
