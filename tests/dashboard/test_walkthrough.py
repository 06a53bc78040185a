"""The README's dashboard walk-through, in a real browser: a payment made
through the example API fails every attempt (its billing service is down), is
found in the dashboard by its idempotency key, read, retried and completed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stackshift import Stackshift
from tests.support.processes import wait_status
from tests.support.workers import running_worker
from workers import QUEUES, register_all, services
from workers.api import create_api

pytest.importorskip("playwright")
from playwright.async_api import expect


@pytest.fixture
def fresh_services() -> Iterator[None]:
    services.reset()
    yield
    services.reset()


async def test_find_a_failed_payment_by_its_key_read_why_retry_it_and_see_it_done(
    app: Stackshift, serve_dashboard: Any, page: Any, fresh_services: None
) -> None:
    register_all(app, backoff=0.05)
    # The README's FAIL_TIMES=enable_paid_plan=4: more than the 4 attempts.
    services.FAIL_TIMES["enable_paid_plan"] = 4
    services.payments["pay_7"] = ("paid", "grace@example.com")
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_api(app)), base_url="http://api"
    )
    async with api, running_worker(app, list(QUEUES)):
        made = await api.post("/payments/pay_7/provision", json={"customerId": "cus_7"})
        assert made.status_code == 202, made.text
        run_id = made.json()["runId"]
        await wait_status(app, run_id, "failed", within=30)

        url = serve_dashboard(queues=list(QUEUES))
        await page.goto(url + "/runs")
        find = page.get_by_role("search", name="find a run")
        await find.locator("select[name=queue]").select_option("payments")
        await find.locator("select[name=by]").select_option("idempotency_key")
        await find.locator("input[name=find]").fill("provision:pay_7")
        await find.get_by_role("button", name="Find").click()
        await page.get_by_role("link", name=run_id).click()

        await expect(page.locator(".run-head .badge")).to_have_text("failed")
        await expect(page.locator(".error-type").first).to_have_text(
            "ServiceUnavailableError"
        )
        await expect(page.locator(".error-message")).to_contain_text(
            "billing is unavailable"
        )
        await expect(page.locator("pre.traceback")).to_contain_text("enable_paid_plan")
        await page.get_by_role("button", name="Retry").click()
        await expect(page.locator(".done")).to_contain_text("Re-driven")
        await expect(page.locator(".run-head .badge")).to_have_text("completed")

    run = await app.get_run(run_id)
    assert run is not None and run.status == "completed"
    assert run.result == {"provisioned": True}
    # The retry went on after the recorded steps: each ran once.
    assert services.calls["verify_payment"] == 1
    assert services.calls["provision_customer_resources"] == 1
    assert services.calls["enable_paid_plan"] == 5
    # The four failed attempts stay in its attempt log, the re-driven one too.
    assert [(a.attempt, a.error_type) for a in run.attempts] == [
        (n, "ServiceUnavailableError") for n in (1, 2, 3, 4)
    ]
