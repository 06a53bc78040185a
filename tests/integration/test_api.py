"""The example web API (workers/api.py), driven over ASGI in-process with an
in-process worker, against the real Redis: what a client of the API sees."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import structlog

from stackshift import Stackshift
from stackshift.cli import load_app
from stackshift.store.keys import new_run_id
from tests.support.waiting import wait_until
from tests.support.workers import running_worker
from workers import QUEUES, register_all, register_events_and_time, services, uploads
from workers.api import create_api
from workers.services import Row

RESULT_TIMEOUT = 15.0
PAYMENT_STEPS = [
    "verify-payment",
    "provision-customer-resources",
    "enable-plan",
    "send-receipt",
]


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    services.reset()
    yield
    services.reset()


@pytest.fixture
async def jobs(redis_url: str, prefix: str) -> AsyncIterator[Stackshift]:
    """Every flow's jobs, on the real Redis under this test's prefix."""
    app = register_all(Stackshift(redis_url, prefix=prefix), backoff=0.05)
    async with register_events_and_time(app, backoff=0.05):
        yield app


@contextlib.asynccontextmanager
async def serving(jobs: Stackshift) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API over ``jobs`` (its lifespan entered, as a server
    would), with a worker serving the flows' queues, while the block runs.
    (Not a fixture: the worker's task group must end in the task it began in.)"""
    api = create_api(jobs)
    transport = httpx.ASGITransport(app=api)
    async with (
        api.router.lifespan_context(api),
        running_worker(jobs, QUEUES, concurrency=4),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client


async def run_of(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    reply = await client.get(f"/runs/{run_id}")
    assert reply.status_code == 200, reply.text
    run: dict[str, Any] = reply.json()
    return run


async def finished(
    jobs: Stackshift, client: httpx.AsyncClient, run_id: str
) -> dict[str, Any]:
    """The run's record (from the API) once it has finished."""
    await jobs.handle(run_id).result(timeout=RESULT_TIMEOUT)
    return await run_of(client, run_id)


async def test_signup_sends_one_verification_email_per_user(jobs: Stackshift) -> None:
    async with serving(jobs) as client:
        body = {"userId": "user_1", "email": "ada@example.com"}
        first = await client.post("/signup", json=body)
        again = await client.post("/signup", json=body)

        assert first.status_code == again.status_code == 202
        assert first.json()["deduplicated"] is False
        assert again.json() == {"runId": first.json()["runId"], "deduplicated": True}
        run = await finished(jobs, client, first.json()["runId"])
        assert (run["job"], run["queue"], run["status"]) == (
            "sendVerificationEmail",
            "emails",
            "completed",
        )
        assert run["idempotency_key"] == "verify:user_1"
        assert run["result"] == {"messageId": "msg-verify-user_1"}
        assert services.calls["mail_verification_link"] == 1


async def test_a_request_header_becomes_the_correlation_id_of_its_runs(
    jobs: Stackshift,
) -> None:
    async with serving(jobs) as client:
        by_request = await client.post(
            "/uploads/f_1", headers={"X-Request-ID": "req-7f3a"}
        )
        by_correlation = await client.post(
            "/uploads/f_2",
            headers={"X-Correlation-ID": "order-42", "X-Request-ID": "req-1"},
        )
        plain = await client.post("/uploads/f_3")

        assert by_request.headers["X-Correlation-ID"] == "req-7f3a"
        assert by_correlation.headers["X-Correlation-ID"] == "order-42"
        assert "X-Correlation-ID" not in plain.headers
        run_ids = [r.json()["runId"] for r in (by_request, by_correlation, plain)]
        runs = [await finished(jobs, client, run_id) for run_id in run_ids]
        assert [run["correlation_id"] for run in runs] == [
            "req-7f3a",
            "order-42",
            run_ids[2],  # none given: the run's own id
        ]


async def test_a_bad_correlation_header_is_refused(jobs: Stackshift) -> None:
    async with serving(jobs) as client:
        reply = await client.post(
            "/uploads/f_1", headers={"X-Correlation-ID": "two words"}
        )
        assert reply.status_code == 400
        assert "X-Correlation-ID" in reply.json()["detail"]


async def test_provision_runs_the_payment_flow_once_per_payment(
    jobs: Stackshift,
) -> None:
    async with serving(jobs) as client:
        body = {"customerId": "cus_1"}
        first = await client.post("/payments/pay_1/provision", json=body)
        again = await client.post("/payments/pay_1/provision", json=body)

        assert again.json() == {"runId": first.json()["runId"], "deduplicated": True}
        run = await finished(jobs, client, first.json()["runId"])
        assert (run["job"], run["status"], run["result"]) == (
            "provisionAfterPayment",
            "completed",
            {"provisioned": True},
        )
        assert [s["step_id"] for s in run["steps"]] == PAYMENT_STEPS


async def test_payment_confirmed_makes_one_run_of_the_subscribed_job(
    jobs: Stackshift,
) -> None:
    """The event's run carries the request's correlation id on its log lines."""
    async with serving(jobs) as client:
        services.payments["pay_2"] = ("paid", "bob@example.com")
        headers = {"X-Correlation-ID": "webhook-9"}
        body = {"customerId": "cus_2"}
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            first = await client.post(
                "/payments/pay_2/confirmed", json=body, headers=headers
            )
            again = await client.post(
                "/payments/pay_2/confirmed", json=body, headers=headers
            )
            await wait_until(
                lambda: any(
                    line["event"] == "run_finished"
                    and line.get("job") == "provisionOnPaymentConfirmed"
                    for line in logs
                ),
                timeout=RESULT_TIMEOUT,
                message="the run made by payment.confirmed",
            )

        assert first.status_code == 202
        assert first.json() == {"eventId": "pay_2", "duplicate": False}
        assert again.json() == {"eventId": "pay_2", "duplicate": True}
        finished_lines = [
            line
            for line in logs
            if line["event"] == "run_finished"
            and line.get("job") == "provisionOnPaymentConfirmed"
        ]
        assert [
            (line["outcome"], line["correlation_id"]) for line in finished_lines
        ] == [("completed", "webhook-9")]
        assert services.calls["send_receipt"] == 1


async def test_a_refund_resumes_the_run_waiting_in_its_refund_window(
    jobs: Stackshift,
) -> None:
    async with serving(jobs) as client:
        reply = await client.post(
            "/payments/pay_3/refund-window",
            json={"customerId": "cus_3", "refundWindowSeconds": 300},
            headers={"X-Request-ID": "checkout-3"},
        )
        assert reply.status_code == 202
        run_id = reply.json()["runId"]

        async def waiting_for_refund() -> dict[str, Any]:
            """The run once it waits for the refund (first it waits for its
            child run); empty before."""
            run = await run_of(client, run_id)
            waits = run["waiting_for"]
            if run["status"] == "suspended" and waits and waits[0]["kind"] == "event":
                return run
            return {}

        waiting: dict[str, Any] = await wait_until(
            waiting_for_refund, timeout=RESULT_TIMEOUT, message="the wait for a refund"
        )
        (wait,) = waiting["waiting_for"]
        assert (wait["step_id"], wait["events"], wait["match"]) == (
            "await-refund",
            ["refund.issued"],
            {"paymentId": "pay_3"},
        )
        assert wait["until"] is not None
        other = await client.post(
            "/payments/pay_other/refunds", json={"refundId": "re_0"}
        )
        mine = await client.post("/payments/pay_3/refunds", json={"refundId": "re_3"})
        again = await client.post("/payments/pay_3/refunds", json={"refundId": "re_3"})

        assert other.status_code == mine.status_code == 202
        assert mine.json() == {"eventId": "re_3", "duplicate": False}
        assert again.json() == {"eventId": "re_3", "duplicate": True}
        run = await finished(jobs, client, run_id)
        assert run["result"] == {
            "provisioned": True,
            "refunded": True,
            "refundId": "re_3",
        }
        assert [s["step_id"] for s in run["steps"]] == [
            "provision",
            "await-refund",
            "revoke-plan",
        ]
        assert run["correlation_id"] == "checkout-3"
        child = await run_of(client, run["steps"][0]["result"]["run_id"])
        assert (child["job"], child["parent_run_id"], child["correlation_id"]) == (
            "provisionAfterPayment",
            run_id,
            "checkout-3",
        )
        assert services.calls["revoke_paid_plan"] == 1


async def test_the_refund_window_closes_without_a_refund(jobs: Stackshift) -> None:
    async with serving(jobs) as client:
        reply = await client.post(
            "/payments/pay_4/refund-window",
            json={"customerId": "cus_4", "refundWindowSeconds": 0.2},
        )
        run = await finished(jobs, client, reply.json()["runId"])

        assert run["result"] == {"provisioned": True, "refunded": False}
        steps = {s["step_id"]: s["result"] for s in run["steps"]}
        assert list(steps) == ["provision", "await-refund"]
        assert steps["await-refund"] is None  # timed out
        assert services.calls["revoke_paid_plan"] == 0


async def test_onboarding_runs_a_child_then_sleeps(jobs: Stackshift) -> None:
    async with serving(jobs) as client:
        body = {
            "userId": "user_5",
            "email": "eve@example.com",
            "welcomeDelaySeconds": 0.2,
        }
        reply = await client.post("/onboarding", json=body)
        run = await finished(jobs, client, reply.json()["runId"])

        assert run["result"] == {
            "verificationMessageId": "msg-verify-user_5",
            "welcomeMessageId": "msg-welcome-user_5",
        }
        assert [s["step_id"] for s in run["steps"]] == [
            "verify-email",
            "welcome-delay",
            "send-welcome",
        ]
        assert services.calls["mail_verification_link"] == 1
        assert services.calls["send_welcome_mail"] == 1


async def test_upload_progress_follows_the_row_counter(
    jobs: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch is held back: progress shows the first batch's rows,
    then all of them."""
    async with serving(jobs) as client:
        services.file_rows["f_9"] = 250
        release = anyio.Event()
        imported: list[int] = []

        async def held_import(batch: list[Row]) -> None:
            imported.append(len(batch))
            if len(imported) == 2:
                await release.wait()

        monkeypatch.setattr(uploads, "import_rows", held_import)
        before = await client.get("/uploads/f_9/progress")
        reply = await client.post("/uploads/f_9")

        async def rows_imported() -> int:
            progress = await client.get("/uploads/f_9/progress")
            rows: int = progress.json()["rowsImported"]
            return rows

        assert before.json() == {"fileId": "f_9", "rowsImported": 0}
        first: int = await wait_until(rows_imported, message="the first batch")
        assert first == 100
        assert await rows_imported() == 100  # the second batch is held
        release.set()
        await finished(jobs, client, reply.json()["runId"])
        assert await rows_imported() == 250


async def test_bad_input_gets_a_clear_error(jobs: Stackshift) -> None:
    async with serving(jobs) as client:
        replies = {
            "id with a space": await client.post("/uploads/f%201"),
            "unknown field": await client.post(
                "/signup",
                json={"userId": "u_1", "email": "a@example.com", "admin": True},
            ),
            "not an email": await client.post(
                "/signup", json={"userId": "u_1", "email": "nobody"}
            ),
            "negative window": await client.post(
                "/payments/pay_1/refund-window",
                json={"customerId": "c_1", "refundWindowSeconds": -1},
            ),
            "malformed run id": await client.get("/runs/not-a-run"),
        }
        assert {what: r.status_code for what, r in replies.items()} == dict.fromkeys(
            replies, 422
        )
        assert "invalid run id" in replies["malformed run id"].json()["detail"]
        unknown = await client.get(f"/runs/{new_run_id('emails')}")
        assert unknown.status_code == 404


async def test_an_unreachable_redis_is_a_503(redis_url: str, prefix: str) -> None:
    async with Stackshift("redis://127.0.0.1:1/0", prefix=prefix) as unreachable:
        api = create_api(unreachable)
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            reply = await c.post("/uploads/f_1")
    assert reply.status_code == 503
    assert "could not be reached" in reply.json()["detail"]


def test_the_module_level_api_serves_the_module_level_app() -> None:
    """`uvicorn workers.api:api` and `stackshift worker workers.api:app` share
    one app, which has every flow's job."""
    from workers.api import api, app

    assert api.state.jobs is app
    assert load_app("workers.api:app") is app
    assert app.registry.names() == [
        "dailyReport",
        "onboardUser",
        "processUpload",
        "provisionAfterPayment",
        "provisionOnPaymentConfirmed",
        "provisionWithRefundWindow",
        "sendVerificationEmail",
    ]
