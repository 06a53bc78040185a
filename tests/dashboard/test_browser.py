"""The dashboard in a real browser: Debian's chromium driven by Playwright,
against the dashboard served by uvicorn, a real worker and the real Redis."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from stackshift import Stackshift
from tests.dashboard.conftest import QUEUES, PageProblems
from tests.dashboard.jobs import Upstream, register_jobs
from tests.support.processes import wait_status
from tests.support.workers import running_worker

pytest.importorskip("playwright")
from playwright.async_api import expect

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


async def dead_run(app: Stackshift, queue: str = "dash", why: str = "x") -> str:
    """A run of ``fragile`` that failed (a worker must be running)."""
    handle = await app.queue(queue).enqueue("fragile", {"why": why})
    await wait_status(app, handle.run_id, "failed", within=15)
    return handle.run_id


def row_of(page: Any, run_id: str) -> Any:
    return page.locator("table.runs tbody tr").filter(has_text=run_id)


async def test_every_page_loads_with_its_style_and_script_and_no_errors(
    app: Stackshift, serve_dashboard: Any, page: Any, problems: PageProblems
) -> None:
    register_jobs(app, Upstream())
    async with running_worker(app, QUEUES):
        done = await app.queue("dash").enqueue("steps", {"name": "n1"})
        await done.result(timeout=10)
        url = serve_dashboard()
        await page.goto(url + "/")
        await expect(page.locator("h1")).to_have_text("Queues")
        await expect(page.locator('section[data-queue="dash"]')).to_be_visible()
        await expect(page.locator('section[data-queue="other"]')).to_be_visible()
        nav = page.locator("header nav")
        for label in ["Runs", "Dead letters", "Counters", "Events", "Crons", "Queues"]:
            await nav.get_by_role("link", name=label, exact=True).click()
            await expect(page.locator("h1")).to_have_text(label)
            await expect(nav.locator("[aria-current=page]")).to_have_text(label)
        await page.goto(f"{url}/runs/{done.run_id}")
        await expect(page.locator(".run-head .badge")).to_have_text("completed")
        # The stylesheet applied and the script ran (it reveals its button):
        # the Content-Security-Policy lets the dashboard's own files through.
        await expect(page.locator("[data-live-toggle]")).to_be_visible()
        header = page.locator("header.top")
        background = await header.evaluate("e => getComputedStyle(e).backgroundColor")
        assert background == "rgb(20, 26, 43)"
    assert problems.items == []


async def test_queue_counts_update_live_without_a_reload(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    register_jobs(app, Upstream(up=True))
    await app.queue("dash").enqueue_many("steps", [{"name": f"n{i}"} for i in range(5)])
    url = serve_dashboard()
    await page.goto(url + "/")
    card = page.locator('section[data-queue="dash"]')
    await expect(card.locator('[data-status="queued"]')).to_have_text("5")
    await page.evaluate("window.__sameDocument = true")
    async with running_worker(app, ["dash"]):
        await expect(card.locator('[data-status="queued"]')).to_have_text("0")
        await expect(card.locator("dd").nth(2)).to_have_text("5")  # completed
    assert await page.evaluate("window.__sameDocument") is True  # never reloaded


async def test_filter_runs_and_find_one_by_its_id(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    register_jobs(app, Upstream())
    async with running_worker(app, QUEUES):
        done = await app.queue("other").enqueue("steps", {"name": "n1"})
        await done.result(timeout=10)
        failed = await dead_run(app, "dash")
    url = serve_dashboard()
    await page.goto(url + "/runs")
    form = page.get_by_role("search", name="filter runs")
    await form.locator("select[name=queue]").select_option("other")
    await form.locator("select[name=status]").select_option("completed")
    await form.locator("input[name=job]").fill("steps")
    await form.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(
        re.compile(r"/runs\?queue=other&status=completed&job=steps$")
    )
    await expect(page.locator("main h2").first).to_have_text(
        "other · completed · steps"
    )
    await expect(form.locator("select[name=status]")).to_have_value("completed")

    find = page.get_by_role("search", name="find a run")
    await find.locator("select[name=by]").select_option("run_id")
    await find.locator("input[name=find]").fill(done.run_id)
    await find.get_by_role("button", name="Find").click()
    await expect(page).to_have_url(f"{url}/runs/{done.run_id}")
    await expect(page.locator("h1")).to_contain_text(done.run_id)

    await page.goto(url + "/runs")
    await find.locator("input[name=find]").fill("01" + "A" * 24 + ".dash")
    await find.get_by_role("button", name="Find").click()
    await expect(page.locator(".empty")).to_have_text("No run found.")

    await page.goto(url + "/dead")
    chooser = page.get_by_role("form", name="choose a queue")
    await chooser.locator("select[name=queue]").select_option("dash")
    await chooser.get_by_role("button", name="Show").click()
    await expect(row_of(page, failed)).to_have_count(1)
    await chooser.locator("select[name=queue]").select_option("other")
    await chooser.get_by_role("button", name="Show").click()
    await expect(page.locator("[data-dead-count]")).to_have_text("0")
    await expect(page.locator("table.runs")).to_have_count(0)


async def test_a_run_shows_its_steps_payload_result_and_error_with_traceback(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    register_jobs(app, Upstream())
    async with running_worker(app, QUEUES):
        done = await app.queue("dash").enqueue(
            "steps", {"name": "report-7"}, correlation_id="order-42"
        )
        await done.result(timeout=10)
        failed = await dead_run(app, "dash", why="quota exceeded")
    url = serve_dashboard()
    await page.goto(f"{url}/runs/{done.run_id}")
    steps = page.locator("table.steps tbody tr")
    await expect(steps.locator("td:first-child")).to_have_text(
        ["fetch-input", "transform", "store-output"]
    )
    await expect(steps.locator("svg rect.step")).to_have_count(3)  # the waterfall
    # A step's time runs from the checkpoint before it: transform sleeps 40 ms.
    took = await steps.nth(1).locator("td").nth(2).inner_text()
    assert took.endswith(" ms") and 40 <= int(took.removesuffix(" ms")) < 1000, took
    await expect(page.locator("pre.json").first).to_contain_text('"name": "report-7"')
    await expect(page.locator("pre.json").nth(1)).to_contain_text("stored 6 rows")
    await expect(page.locator("dl.facts")).to_contain_text("order-42")

    await page.goto(f"{url}/runs/{failed}")
    await expect(page.locator(".run-head .badge")).to_have_text("failed")
    await expect(page.locator(".error-line")).to_have_text(
        "RuntimeError: upstream said no: quota exceeded"
    )
    traceback = page.locator("pre.traceback")
    await expect(traceback).to_contain_text("Traceback (most recent call last)")
    await expect(traceback).to_contain_text("upstream said no")


async def test_retry_a_dead_run_and_watch_it_complete(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    upstream = Upstream()
    register_jobs(app, upstream)
    async with running_worker(app, ["dash"]):
        run_id = await dead_run(app)
        url = serve_dashboard()
        await page.goto(url + "/dead?queue=dash")
        row = row_of(page, run_id)
        await expect(row.locator(".badge")).to_have_text("failed")
        upstream.up = True  # the cause is fixed: now re-drive it
        await row.get_by_role("button", name="Retry").click()
        await expect(page).to_have_url(f"{url}/runs/{run_id}?done=retried")
        await expect(page.locator(".done")).to_contain_text("Re-driven")
        await expect(page.locator(".run-head .badge")).to_have_text("completed")
        await expect(page.locator("pre.json").nth(1)).to_contain_text('"fixed": true')
    run = await app.get_run(run_id)
    assert run is not None and run.status == "completed"
    assert run.steps[0].step_id == "prepare"  # resumed: the step was not redone
    assert run.steps[0].attempt == 1


async def test_a_post_without_the_token_is_refused_and_changes_nothing(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    register_jobs(app, Upstream(up=False))
    async with running_worker(app, ["dash"]):
        run_id = await dead_run(app)
        url = serve_dashboard()
        retry = f"{url}/runs/{run_id}/retry"
        await page.goto(f"{url}/runs/{run_id}")  # the browser now holds the cookie
        for form in ({}, {"csrf_token": "forged.token"}):
            answer = await page.request.post(retry, form=form)
            assert answer.status == 403
            assert "nothing was changed" in await answer.text()
        status = await page.evaluate(
            """async (target) => (await fetch(target, {method: "POST",
                 headers: {"Content-Type": "application/x-www-form-urlencoded"},
                 body: "csrf_token="})).status""",
            retry,
        )
        assert status == 403
        run = await app.get_run(run_id)
        assert run is not None and run.status == "failed"
        await page.goto(url + "/dead?queue=dash")
        await expect(row_of(page, run_id)).to_have_count(1)


async def test_an_injected_script_is_shown_as_text_and_never_runs(
    app: Stackshift, serve_dashboard: Any, page: Any, problems: PageProblems
) -> None:
    register_jobs(app, Upstream())
    async with running_worker(app, ["dash"]):
        handle = await app.queue("dash").enqueue(
            "refuse",
            {"note": HOSTILE, "message": HOSTILE},
            idempotency_key=HOSTILE,
            correlation_id=HOSTILE,
        )
        run = await wait_status(app, handle.run_id, "failed", within=15)
    assert run.error is not None and run.error.message == HOSTILE
    url = serve_dashboard()
    await page.goto(f"{url}/runs/{handle.run_id}")
    await expect(page.locator("pre.json").first).to_contain_text(json.dumps(HOSTILE))
    await expect(page.locator(".error-message")).to_have_text(HOSTILE)
    await expect(page.locator("dl.facts")).to_contain_text(HOSTILE)
    visited = [
        f"{url}/dead?queue=dash",
        f"{url}/runs?queue=dash&by=correlation_id&find=" + _quoted(HOSTILE),
        f"{url}/runs?queue=dash&by=idempotency_key&find=" + _quoted(HOSTILE),
        f"{url}/counters?key=" + _quoted(HOSTILE),
    ]
    for target in visited:
        async with page.expect_response(lambda r: "partial=1" in r.url):
            await page.goto(target)  # and wait for a live refresh to swap a part in
        await expect(page.locator("main")).to_contain_text(HOSTILE)
        assert await page.evaluate("window.__pwned") is None, target
    assert await page.evaluate("window.__pwned") is None
    # Nothing was even attempted: an inline script would be refused (and logged).
    assert problems.items == []


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


async def test_retry_all_shows_how_many_first_and_cancel_goes_back(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    register_jobs(app, Upstream())
    async with running_worker(app, ["dash"]):
        for why in ("a", "b", "c"):
            await dead_run(app, why=why)
    url = serve_dashboard()
    await page.goto(url + "/dead?queue=dash")
    await expect(page.locator("[data-dead-count]")).to_have_text("3")
    await page.get_by_role("link", name="Retry all…").click()
    await expect(page.locator("h1")).to_have_text(
        "Retry every dead-lettered run of dash?"
    )
    await expect(page.get_by_role("button", name="Retry 3 runs")).to_be_visible()
    await page.get_by_role("link", name="Cancel").click()
    await expect(page).to_have_url(f"{url}/dead?queue=dash")
    await expect(page.locator("[data-dead-count]")).to_have_text("3")


async def test_retry_all_re_drives_every_dead_run(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    upstream = Upstream()
    register_jobs(app, upstream)
    async with running_worker(app, ["dash"]):
        runs = [await dead_run(app, why=why) for why in ("a", "b")]
        upstream.up = True
        url = serve_dashboard()
        await page.goto(url + "/dead/retry-all?queue=dash")
        await page.get_by_role("button", name="Retry 2 runs").click()
        await expect(page.locator(".done")).to_have_text(
            "Re-drove 2 dead-lettered runs."
        )
        for run_id in runs:
            await wait_status(app, run_id, "completed", within=15)


async def test_cancel_a_queued_run(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    handle = await app.queue("dash").enqueue("steps", {"name": "never"})
    url = serve_dashboard()
    await page.goto(f"{url}/runs/{handle.run_id}")
    await expect(page.locator(".run-head .badge")).to_have_text("queued")
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator(".run-head .badge")).to_have_text("cancelled")


async def test_mounted_under_a_path_every_link_and_form_stays_under_it(
    app: Stackshift, serve_dashboard: Any, page: Any
) -> None:
    upstream = Upstream()
    register_jobs(app, upstream)
    async with running_worker(app, ["dash"]):
        run_id = await dead_run(app)
        url = serve_dashboard(mount="/jobs")
        assert url.endswith("/jobs")
        await page.goto(url + "/")
        await (
            page.locator("header nav").get_by_role("link", name="Dead letters").click()
        )
        await expect(page).to_have_url(f"{url}/dead")
        targets = await page.eval_on_selector_all(
            "a[href], form[action], link[href], script[src]",
            "els => els.map(e => e.getAttribute('href') || e.getAttribute('action')"
            " || e.getAttribute('src'))",
        )
        assert targets and all(t.startswith("/jobs/") for t in targets), targets
        upstream.up = True
        await row_of(page, run_id).get_by_role("button", name="Retry").click()
        await expect(page).to_have_url(f"{url}/runs/{run_id}?done=retried")
        await expect(page.locator(".run-head .badge")).to_have_text("completed")
