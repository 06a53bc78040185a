"""Run the documentation's flows end to end, with a worker in this process.

``python -m workers.demo`` (or ``make demo``): the three documented flows, then
events and durable time (an event that makes a run, a wait resumed by an
event, a wait that times out, a sleep, a child run, a cron tick). The backend is
``$STACKSHIFT_REDIS_URL`` if set, else a Redis on localhost:6379 if one answers,
else ``memory://``. Every key goes under a prefix of this invocation's own
(``demo-<token>:``), deleted at the end unless ``--keep`` is given. Exits 1 if a
flow did not behave as documented.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from stackshift import RunInfo, RunStatus, Stackshift, StackshiftError
from stackshift.logs import configure_logging

from . import QUEUES, register_all, register_events_and_time, reports, services
from .uploads import rows_counter

LOCAL_URL = "redis://localhost:6379/0"
PING_TIMEOUT = 0.5
RESULT_TIMEOUT = 20.0
BACKOFF = 0.2  # first retry after 0.1-0.2 s (jittered), so the demo takes seconds
SHORT = 0.5  # the demo's sleep and refund window, in seconds
EVERY_SECOND = "* * * * * *"  # six fields: the first is seconds
POLL = 0.02


class Checks:
    """What the demo expected to see, printed as it is checked."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def expect(self, condition: bool, what: str) -> None:
        print(f"  {'ok  ' if condition else 'FAIL'} {what}")
        if not condition:
            self.failed.append(what)


Flow = Callable[[Stackshift, Checks], Awaitable[None]]


async def answers_ping(url: str) -> bool:
    """Does a Redis answer PING at ``url`` within PING_TIMEOUT?"""
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=PING_TIMEOUT, socket_timeout=PING_TIMEOUT
    )
    try:
        with anyio.move_on_after(PING_TIMEOUT):
            return bool(await client.ping())
        return False
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def pick_backend() -> tuple[str, str]:
    """The URL to use, and why."""
    url = os.environ.get("STACKSHIFT_REDIS_URL")
    if url:
        return url, "from $STACKSHIFT_REDIS_URL"
    if await answers_ping(LOCAL_URL):
        return LOCAL_URL, "a local Redis answered PING"
    return "memory://", "no Redis answered on localhost:6379: embedded, in-process"


def describe(run: RunInfo) -> str:
    steps = ", ".join(f"{s.step_id} (attempt {s.attempt})" for s in run.steps)
    lines = [
        f"  run {run.run_id}: {run.status}, attempt {run.attempt}",
        f"    steps recorded: {steps or 'none'}",
    ]
    for wait in run.waiting_for:
        what = wait.kind
        if wait.events:
            what += f" {' or '.join(wait.events)} matching {wait.match or {}}"
        if wait.child_run_id:
            what += f" run {wait.child_run_id}"
        until = (
            f" until {wait.until.isoformat(timespec='milliseconds')}"
            if wait.until
            else ""
        )
        lines.append(f"    waits for: {what} (step {wait.step_id}){until}")
    return "\n".join(lines)


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds; TimeoutError after RESULT_TIMEOUT."""
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {RESULT_TIMEOUT} s for {what}")
        await anyio.sleep(POLL)


def waits_for(run: RunInfo, kind: str) -> bool:
    """Is the run suspended, waiting for a ``kind`` wait ("sleep", "event",
    "invoke")?"""
    return run.status == RunStatus.SUSPENDED and any(
        w.kind == kind for w in run.waiting_for
    )


async def watch_run(
    app: Stackshift, run_id: str, until: Callable[[RunInfo], bool], what: str
) -> RunInfo:
    """The run's first record seen for which ``until`` holds."""
    found: list[RunInfo] = []

    async def seen() -> bool:
        run = await app.get_run(run_id)
        if run is not None and until(run):
            found.append(run)
        return bool(found)

    await wait_for(seen, what)
    return found[0]


async def show_run(app: Stackshift, run_id: str) -> RunInfo | None:
    run = await app.get_run(run_id)
    print(describe(run) if run else f"  run {run_id}: no record")
    return run


async def signup_flow(app: Stackshift, checks: Checks) -> None:
    print("\n== 1. Signup: the verification email, enqueued twice with one key")
    payload = {"userId": "user_123", "email": "ada@example.com"}
    queue = app.queue("emails")
    first = await queue.enqueue(
        "sendVerificationEmail", payload, idempotency_key="verify:user_123"
    )
    print(f"  enqueue 1: run {first.run_id}, deduplicated={first.deduplicated}")
    again = await queue.enqueue(
        "sendVerificationEmail", payload, idempotency_key="verify:user_123"
    )
    print(f"  enqueue 2: run {again.run_id}, deduplicated={again.deduplicated}")
    result = await first.result(timeout=RESULT_TIMEOUT)
    print(f"  result: {result}")
    run = await show_run(app, first.run_id)
    checks.expect(
        again.deduplicated and again.run_id == first.run_id,
        "the second enqueue made no new run (same run id, deduplicated=True)",
    )
    sent = services.calls["mail_verification_link"]
    checks.expect(sent == 1, f"one verification mail sent (sent: {sent})")
    checks.expect(run is not None and run.status == "completed", "run completed")


async def payment_flow(app: Stackshift, checks: Checks) -> None:
    print("\n== 2. Payment to provisioning, with the billing service failing once")
    services.FAIL_ONCE.add("enable_paid_plan")
    services.payments["pay_1"] = ("paid", "ada@example.com")
    handle = await app.queue("payments").enqueue(
        "provisionAfterPayment",
        {"paymentId": "pay_1", "customerId": "cus_1"},
        idempotency_key="provision:pay_1",
    )
    print(f"  enqueued run {handle.run_id}")
    result = await handle.result(timeout=RESULT_TIMEOUT)
    print(f"  result: {result}")
    run = await show_run(app, handle.run_id)
    steps = [s.step_id for s in run.steps] if run else []
    by = {s.step_id: s.attempt for s in run.steps} if run else {}
    checks.expect(result == {"provisioned": True}, "the customer was provisioned")
    checks.expect(
        run is not None and run.status == "completed" and run.attempt == 2,
        "completed on attempt 2, after attempt 1 failed",
    )
    checks.expect(
        steps
        == [
            "verify-payment",
            "provision-customer-resources",
            "enable-plan",
            "send-receipt",
        ],
        "all four steps recorded, in order",
    )
    checks.expect(
        by.get("verify-payment") == 1 and by.get("enable-plan") == 2,
        "attempt 2 replayed verify-payment and provision-customer-resources "
        "from attempt 1's records",
    )
    verified = services.calls["verify_payment"]
    provisioned = services.calls["provision_customer_resources"]
    checks.expect(
        verified == 1 and provisioned == 1,
        f"the payment was verified and resources provisioned once each, across "
        f"2 attempts (verify_payment: {verified}, provision: {provisioned})",
    )


async def upload_flow(app: Stackshift, checks: Checks) -> None:
    print("\n== 3. File processing, with mark-complete failing once after the import")
    services.FAIL_ONCE.add("mark_file_complete")
    services.file_rows["f_1"] = 250
    handle = await app.queue("uploads").enqueue("processUpload", {"fileId": "f_1"})
    print(f"  enqueued run {handle.run_id}")
    result = await handle.result(timeout=RESULT_TIMEOUT)
    print(f"  result: {result}")
    run = await show_run(app, handle.run_id)
    rows = await app.state.get(rows_counter("f_1"))
    print(f"  counter {rows_counter('f_1')} = {rows}")
    imports = services.calls["import_rows"]
    checks.expect(result == {"rows": 250}, "the job reports 250 rows")
    checks.expect(
        run is not None and run.status == "completed" and run.attempt == 2,
        "completed on attempt 2, after attempt 1 failed",
    )
    checks.expect(
        rows == 250,
        f"the counter is exact: 250, not 500, although both attempts imported "
        f"every batch (import_rows ran {imports} times: it is not a step, so it "
        "must be idempotent)",
    )
    checks.expect(
        services.calls["download_file"] == 1 and services.calls["parse_csv"] == 1,
        "download-file and parse-file ran once (replayed on attempt 2)",
    )


async def event_flow(app: Stackshift, checks: Checks) -> None:
    print("\n== 4. An event makes a run: payment.confirmed, sent twice with one id")
    data = {"paymentId": "pay_4", "customerId": "cus_4"}
    first = await app.send_event("payment.confirmed", data, id="pay_4")
    print(f"  send 1: event {first.id}, duplicate={first.duplicate}")
    again = await app.send_event("payment.confirmed", data, id="pay_4")
    print(f"  send 2: event {again.id}, duplicate={again.duplicate}")

    async def receipt_sent() -> bool:
        return services.calls["send_receipt"] >= 1

    await wait_for(receipt_sent, "the receipt of the run the event made")
    checks.expect(
        not first.duplicate and again.duplicate,
        "the second send was a no-op (same event id: duplicate=True)",
    )
    checks.expect(
        services.calls["verify_payment"] == 1 and services.calls["send_receipt"] == 1,
        "provisionOnPaymentConfirmed ran for the event: payment verified, "
        "receipt sent, once each",
    )


async def refund_flow(app: Stackshift, checks: Checks) -> None:
    print("\n== 5. A wait resumed by an event: refund.issued within the window")
    handle = await app.queue("payments").enqueue(
        "provisionWithRefundWindow",
        {"paymentId": "pay_5", "customerId": "cus_5", "refundWindowSeconds": 60},
    )
    print(f"  enqueued run {handle.run_id}")
    # First suspended on its child run, then (provisioned) on the refund.
    waiting = await watch_run(
        app, handle.run_id, lambda r: waits_for(r, "event"), "the wait for a refund"
    )
    print(describe(waiting))
    waits = [(w.kind, w.events, w.match) for w in waiting.waiting_for]
    checks.expect(
        waits == [("event", ["refund.issued"], {"paymentId": "pay_5"})],
        "provisioned, then suspended: waiting for refund.issued with paymentId pay_5",
    )
    other = await app.send_event(
        "refund.issued", {"paymentId": "pay_other", "refundId": "re_other"}
    )
    print(f"  sent refund.issued for pay_other (event {other.id})")
    mine = await app.send_event(
        "refund.issued", {"paymentId": "pay_5", "refundId": "re_5"}
    )
    print(f"  sent refund.issued for pay_5 (event {mine.id})")
    result = await handle.result(timeout=RESULT_TIMEOUT)
    print(f"  result: {result}")
    run = await show_run(app, handle.run_id)
    checks.expect(
        result == {"provisioned": True, "refunded": True, "refundId": "re_5"},
        "resumed by pay_5's refund, not by pay_other's",
    )
    checks.expect(
        run is not None
        and [s.step_id for s in run.steps]
        == ["provision", "await-refund", "revoke-plan"]
        and services.calls["revoke_paid_plan"] == 1,
        "the paid plan was revoked once, after the recorded wait",
    )


async def refund_timeout_flow(app: Stackshift, checks: Checks) -> None:
    print(f"\n== 6. A wait that times out: no refund within a {SHORT} s window")
    handle = await app.queue("payments").enqueue(
        "provisionWithRefundWindow",
        {"paymentId": "pay_6", "customerId": "cus_6", "refundWindowSeconds": SHORT},
    )
    print(f"  enqueued run {handle.run_id}")
    result = await handle.result(timeout=RESULT_TIMEOUT)
    print(f"  result: {result}")
    run = await show_run(app, handle.run_id)
    waited = {s.step_id: s.result for s in run.steps} if run else {}
    checks.expect(
        result == {"provisioned": True, "refunded": False},
        "the window closed: the run went on without a refund",
    )
    checks.expect(
        "await-refund" in waited and waited["await-refund"] is None,
        "the wait was recorded as timed out (None)",
    )
    checks.expect(services.calls["revoke_paid_plan"] == 0, "nothing was revoked")


async def onboarding_flow(app: Stackshift, checks: Checks) -> None:
    print(f"\n== 7. A child run and a {SHORT} s sleep: onboarding a user")
    started = time.monotonic()
    handle = await app.queue("emails").enqueue(
        "onboardUser",
        {"userId": "user_7", "email": "eve@example.com", "welcomeDelaySeconds": SHORT},
        correlation_id="signup-req-7",
    )
    print(f"  enqueued run {handle.run_id} (correlation id signup-req-7)")
    # Seen while it sleeps, unless the machine is too slow to catch it then.
    seen = await watch_run(
        app,
        handle.run_id,
        lambda r: waits_for(r, "sleep") or r.status.finished,
        "the sleep",
    )
    if waits_for(seen, "sleep"):
        print(describe(seen))
    result = await handle.result(timeout=RESULT_TIMEOUT)
    elapsed = time.monotonic() - started
    print(f"  result: {result} (after {elapsed:.2f} s)")
    run = await show_run(app, handle.run_id)
    steps = {s.step_id: s.result for s in run.steps} if run else {}
    at = {s.step_id: s.recorded_at for s in run.steps} if run else {}
    sent, welcomed = at.get("verify-email"), at.get("send-welcome")
    gap = (welcomed - sent).total_seconds() if sent and welcomed else 0.0
    invoked = steps.get("verify-email")
    child_id = invoked.get("run_id") if isinstance(invoked, dict) else None
    child = await app.get_run(child_id) if isinstance(child_id, str) else None
    if child is not None:
        print(
            f"  child run {child.run_id}: {child.job}, {child.status}, "
            f"parent {child.parent_run_id}, correlation id {child.correlation_id}"
        )
    checks.expect(
        result
        == {
            "verificationMessageId": "msg-verify-user_7",
            "welcomeMessageId": "msg-welcome-user_7",
        },
        "the parent got its child's result (the verification mail's id)",
    )
    checks.expect(
        child is not None
        and child.status == "completed"
        and child.parent_run_id == handle.run_id
        and child.correlation_id == "signup-req-7",
        "the child run completed, with its parent's id and correlation id",
    )
    checks.expect(
        list(steps) == ["verify-email", "welcome-delay", "send-welcome"]
        and gap >= SHORT,
        f"the welcome mail went {gap:.2f} s after the verification mail "
        f"(the sleep: {SHORT} s)",
    )
    checks.expect(
        services.calls["mail_verification_link"] == 1
        and services.calls["send_welcome_mail"] == 1,
        "each mail was sent once, although the run suspended twice and replayed",
    )


async def cron_flow(app: Stackshift, checks: Checks) -> None:
    print(f"\n== 8. A cron tick: dailyReport on '{EVERY_SECOND}' (every second)")
    worker = app.worker([reports.QUEUE], concurrency=2, lease_timeout=10)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        print(f"  a worker serves the {reports.QUEUE!r} queue: it makes the ticks")
        try:

            async def report_made() -> bool:
                return await app.state.get(reports.REPORTS_MADE) >= 1

            await wait_for(report_made, "a tick's run of dailyReport")
        finally:
            worker.stop()
    made = await app.state.get(reports.REPORTS_MADE)
    print(f"  counter {reports.REPORTS_MADE} = {made}")
    checks.expect(made >= 1, "a tick made a run of dailyReport, which completed")


FLOWS: list[Flow] = [
    signup_flow,
    payment_flow,
    upload_flow,
    event_flow,
    refund_flow,
    refund_timeout_flow,
    onboarding_flow,
    cron_flow,
]


async def run_flows(app: Stackshift, flows: list[Flow]) -> Checks:
    """Serve every flow's queue with one in-process worker while ``flows`` run."""
    checks = Checks()
    worker = app.worker(list(QUEUES), concurrency=10, lease_timeout=10)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            for flow in flows:
                services.reset()
                await flow(app, checks)
        finally:
            worker.stop()
    return checks


async def delete_keys(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (this demo's own)."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        return int(await client.delete(*keys)) if keys else 0
    finally:
        await client.aclose()


def expected_failure(exc: Exception) -> Exception | None:
    """The Redis or timeout error that stopped the demo (unwrapped from the task
    group's exception group), or None for anything else (a bug: re-raise it)."""
    if not isinstance(exc, ExceptionGroup):
        return exc
    matched, rest = exc.split((StackshiftError, TimeoutError))
    if matched is None or rest is not None:
        return None
    first = matched.exceptions[0]
    return first if isinstance(first, Exception) else None


async def main(keep: bool) -> int:
    configure_logging(json=False, level="warning")
    url, why = await pick_backend()
    prefix = f"demo-{secrets.token_hex(4)}:"
    print(f"backend: {url} ({why})")
    print(f"key prefix: {prefix}")
    app = register_events_and_time(
        register_all(Stackshift(url, prefix=prefix), backoff=BACKOFF),
        backoff=BACKOFF,
        report_schedule=EVERY_SECOND,
    )
    try:
        async with app:
            checks = await run_flows(app, FLOWS)
    except (StackshiftError, TimeoutError, ExceptionGroup) as exc:
        reason = expected_failure(exc)
        if reason is None:
            raise
        print(f"\nthe demo could not finish: {type(reason).__name__}: {reason}")
        return 2
    if url.startswith("memory://"):
        pass
    elif keep:
        print(f"\nkept the demo's keys: redis-cli --scan --pattern '{prefix}*'")
    else:
        deleted = await delete_keys(url, prefix)
        print(f"\ndeleted the demo's {deleted} keys (--keep to inspect them)")
    if checks.failed:
        print(f"{len(checks.failed)} check(s) failed:")
        for what in checks.failed:
            print(f"  - {what}")
        return 1
    print("all flows behaved as documented")
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the demo's keys in Redis"
    )
    args = parser.parse_args()
    return anyio.run(main, args.keep)


if __name__ == "__main__":
    sys.exit(cli())
