"""The documentation's three flows (workers/), end to end with an in-process
worker, on the real Redis and on memory://: what a user would check."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from stackshift import JobFailed, PayloadError, RunHandle, Stackshift, Worker
from stackshift.cli import load_app
from stackshift.store.memory import reset_memory
from tests.support.waiting import wait_until
from workers import QUEUES, register_all, services, uploads
from workers.services import Row, ServiceUnavailableError

ROOT = Path(__file__).resolve().parents[2]
RESULT_TIMEOUT = 15.0
PAYMENT_STEPS = [
    "verify-payment",
    "provision-customer-resources",
    "enable-plan",
    "send-receipt",
]


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    """No call counts, pending failures or seeded data leak between tests."""
    services.reset()
    yield
    services.reset()


@pytest.fixture(params=["redis", "memory"])
async def flows(
    request: pytest.FixtureRequest, redis_url: str, prefix: str
) -> AsyncIterator[Stackshift]:
    """An app with the three flows' jobs, on the real Redis or on memory://."""
    name = f"flows-{uuid.uuid4().hex[:8]}"
    url = redis_url if request.param == "redis" else f"memory://{name}"
    async with register_all(Stackshift(url, prefix=prefix), backoff=0.05) as app:
        yield app
    reset_memory(name)


@contextlib.asynccontextmanager
async def serving(app: Stackshift) -> AsyncIterator[Worker]:
    """One worker for every flow's queue, in this process, while the block runs."""
    worker = app.worker(list(QUEUES), concurrency=4, lease_timeout=10)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


async def test_verification_email_is_sent_once_however_often_it_is_enqueued(
    flows: Stackshift,
) -> None:
    """Concurrent enqueues with one idempotency key make one run, one email."""
    payload = {"userId": "user_123", "email": "ada@example.com"}
    handles: list[RunHandle] = []

    async def enqueue() -> None:
        handles.append(
            await flows.queue("emails").enqueue(
                "sendVerificationEmail", payload, idempotency_key="verify:user_123"
            )
        )

    async with serving(flows):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(enqueue)
        first = next(h for h in handles if not h.deduplicated)
        result = await first.result(timeout=RESULT_TIMEOUT)
        late = await flows.queue("emails").enqueue(
            "sendVerificationEmail", payload, idempotency_key="verify:user_123"
        )

    assert sum(not h.deduplicated for h in handles) == 1
    assert {h.run_id for h in [*handles, late]} == {first.run_id}
    assert late.deduplicated
    assert result == {"messageId": "msg-verify-user_123"}
    assert services.calls["mail_verification_link"] == 1
    run = await flows.get_run(first.run_id)
    assert run is not None
    assert (run.job, run.queue, run.status, run.attempt) == (
        "sendVerificationEmail",
        "emails",
        "completed",
        1,
    )
    assert [s.step_id for s in run.steps] == ["send-email"]
    assert run.idempotency_key == "verify:user_123"


async def test_payment_retry_resumes_after_the_recorded_steps(
    flows: Stackshift,
) -> None:
    """enable-plan fails once: attempt 2 replays verify-payment and
    provision-customer-resources instead of calling those services again."""
    services.FAIL_ONCE.add("enable_paid_plan")
    services.payments["pay_1"] = ("paid", "ada@example.com")

    async with serving(flows):
        handle = await flows.queue("payments").enqueue(
            "provisionAfterPayment", {"paymentId": "pay_1", "customerId": "cus_1"}
        )
        result = await handle.result(timeout=RESULT_TIMEOUT)

    assert result == {"provisioned": True}
    run = await flows.get_run(handle.run_id)
    assert run is not None
    assert (run.status, run.attempt, run.error) == ("completed", 2, None)
    assert [s.step_id for s in run.steps] == PAYMENT_STEPS
    assert [s.attempt for s in run.steps] == [1, 1, 2, 2]
    assert run.steps[0].result == {
        "payment_id": "pay_1",
        "status": "paid",
        "customer_email": "ada@example.com",
    }
    assert services.calls == {
        "verify_payment": 1,
        "provision_customer_resources": 1,
        "enable_paid_plan": 2,  # the failed call and the successful one
        "send_receipt": 1,
    }


async def test_unpaid_payment_is_retried_then_dead_lettered(
    flows: Stackshift,
) -> None:
    """'Payment is not complete' fails every attempt; the recorded status is
    replayed, so the provider is asked once, and nothing is provisioned."""
    services.payments["pay_2"] = ("pending", "bob@example.com")

    async with serving(flows):
        handle = await flows.queue("payments").enqueue(
            "provisionAfterPayment", {"paymentId": "pay_2", "customerId": "cus_2"}
        )
        with pytest.raises(JobFailed) as failed:
            await handle.result(timeout=RESULT_TIMEOUT)

    assert failed.value.run_id == handle.run_id
    assert failed.value.error_type == "PaymentNotCompleteError"
    assert "Payment is not complete" in str(failed.value)
    run = await flows.get_run(handle.run_id)
    assert run is not None
    assert (run.status, run.attempt) == ("failed", 4)  # 1 + 3 retries
    assert [s.step_id for s in run.steps] == ["verify-payment"]
    assert services.calls == {"verify_payment": 1}
    dead = await flows.dead_letters("payments")
    assert [r.run_id for r in dead] == [handle.run_id]


async def test_upload_counter_is_exact_after_a_failed_attempt(
    flows: Stackshift,
) -> None:
    """mark-complete fails once after every batch was counted: attempt 2 imports
    the rows again (import_rows is not a step) but skips the increments."""
    services.FAIL_ONCE.add("mark_file_complete")
    services.file_rows["f_1"] = 250

    async with serving(flows):
        handle = await flows.queue("uploads").enqueue(
            "processUpload", {"fileId": "f_1"}
        )
        result = await handle.result(timeout=RESULT_TIMEOUT)

    assert result == {"rows": 250}
    assert await flows.state.get(uploads.rows_counter("f_1")) == 250
    run = await flows.get_run(handle.run_id)
    assert run is not None
    assert (run.status, run.attempt) == ("completed", 2)
    assert [(s.step_id, s.attempt) for s in run.steps] == [
        ("download-file", 1),
        ("parse-file", 1),
        ("mark-complete", 2),
    ]
    assert services.calls == {
        "download_file": 1,
        "parse_csv": 1,
        "import_rows": 6,  # 3 batches, twice
        "mark_file_complete": 2,
    }


async def test_upload_counter_is_exact_when_an_attempt_fails_mid_loop(
    flows: Stackshift, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 2 fails on attempt 1 after batch 1 was counted: the counter ends at
    the file's row count, with batch 1 counted once."""
    services.file_rows["f_2"] = 250
    imported: list[int] = []

    async def flaky_import(batch: list[Row]) -> None:
        imported.append(len(batch))
        if len(imported) == 2:
            raise ServiceUnavailableError("database connection reset")

    monkeypatch.setattr(uploads, "import_rows", flaky_import)
    async with serving(flows):
        handle = await flows.queue("uploads").enqueue(
            "processUpload", {"fileId": "f_2"}
        )
        result = await handle.result(timeout=RESULT_TIMEOUT)

    assert result == {"rows": 250}
    assert imported == [100, 100, 100, 100, 50]  # attempt 1: 2 calls; attempt 2: 3
    assert await flows.state.get(uploads.rows_counter("f_2")) == 250
    run = await flows.get_run(handle.run_id)
    assert run is not None
    assert (run.status, run.attempt) == ("completed", 2)


async def test_flows_share_one_worker_and_keep_counters_apart(
    flows: Stackshift,
) -> None:
    """All three jobs, several files at once, one worker: every counter exact."""
    sizes = {"f_a": 30, "f_b": 101, "f_c": 0}
    services.file_rows.update(sizes)

    async with serving(flows):
        uploads_ = [
            await flows.queue("uploads").enqueue("processUpload", {"fileId": f})
            for f in sizes
        ]
        email = await flows.queue("emails").enqueue(
            "sendVerificationEmail", {"userId": "u_9", "email": "eve@example.com"}
        )
        payment = await flows.queue("payments").enqueue(
            "provisionAfterPayment", {"paymentId": "pay_9", "customerId": "cus_9"}
        )
        for handle in [*uploads_, email, payment]:
            await handle.result(timeout=RESULT_TIMEOUT)

    for file_id, rows in sizes.items():
        assert await flows.state.get(uploads.rows_counter(file_id)) == rows
    assert services.calls["mail_verification_link"] == 1
    assert services.calls["send_receipt"] == 1


async def test_invalid_payload_fails_at_enqueue_with_a_clear_error(
    flows: Stackshift,
) -> None:
    with pytest.raises(PayloadError, match="fileId"):
        await flows.queue("uploads").enqueue("processUpload", {"file": "f_1"})


def test_each_flow_module_is_a_worker_app_with_its_job() -> None:
    """`stackshift worker workers.<flow>:app` finds the flow's job there."""
    expected = {
        "workers.signup:app": ["sendVerificationEmail"],
        "workers.payments:app": ["provisionAfterPayment"],
        "workers.uploads:app": ["processUpload"],
    }
    for target, jobs in expected.items():
        assert load_app(target).registry.names() == jobs


DEMO_LINES = [
    "deduplicated=True",
    "one verification mail sent (sent: 1)",
    "enable_paid_plan failed: simulated outage",
    "steps recorded: verify-payment (attempt 1), provision-customer-resources "
    "(attempt 1), enable-plan (attempt 2), send-receipt (attempt 2)",
    "counter files:f_1:rows = 250",
    # events and durable time
    "send 2: event pay_4, duplicate=True",
    "ok   provisionOnPaymentConfirmed ran for the event",
    "waits for: event refund.issued matching {'paymentId': 'pay_5'}",
    "ok   resumed by pay_5's refund, not by pay_other's",
    "result: {'provisioned': True, 'refunded': False}",
    "ok   the wait was recorded as timed out (None)",
    "ok   the child run completed, with its parent's id and correlation id",
    "ok   the welcome mail went",
    "ok   a tick made a run of dailyReport, which completed",
    "all flows behaved as documented",
]


def run_demo(url: str) -> str:
    """`python -m workers.demo` on ``url``: its output, once it exited 0."""
    env = {**os.environ, "STACKSHIFT_REDIS_URL": url}
    env.pop("FAIL_ONCE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "workers.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for line in DEMO_LINES:
        assert line in out, out
    assert "FAIL " not in out
    return out


def test_demo_runs_every_flow_on_memory() -> None:
    """`python -m workers.demo` exits 0 on memory:// and narrates each check."""
    assert "backend: memory://" in run_demo("memory://")


def test_demo_runs_every_flow_on_redis_and_cleans_up(redis_url: str) -> None:
    out = run_demo(redis_url)
    assert f"backend: {redis_url}" in out
    assert "deleted the demo's" in out


async def test_a_failed_attempt_is_visible_while_its_retry_waits(
    flows: Stackshift,
) -> None:
    """Between attempts the run is scheduled, with attempt 1's error and the
    steps it recorded on show (what `stackshift show RUN_ID` prints)."""
    services.FAIL_ONCE.add("enable_paid_plan")
    settings = flows.settings
    slow = register_all(Stackshift(settings.url, prefix=settings.prefix), backoff=60)
    async with slow, serving(slow):
        handle = await slow.queue("payments").enqueue(
            "provisionAfterPayment", {"paymentId": "pay_3", "customerId": "cus_3"}
        )

        async def scheduled() -> bool:
            run = await flows.get_run(handle.run_id)
            return run is not None and run.status == "scheduled"

        seen: bool = await wait_until(
            scheduled, timeout=RESULT_TIMEOUT, message="a retry"
        )
        assert seen

    run = await flows.get_run(handle.run_id)
    assert run is not None
    assert run.attempt == 1
    assert run.error is not None
    assert (run.error.type, run.error.attempt) == ("ServiceUnavailableError", 1)
    assert [s.step_id for s in run.steps] == PAYMENT_STEPS[:2]
    assert run.scheduled_for is not None and run.started_at is not None
    assert run.scheduled_for > run.started_at
