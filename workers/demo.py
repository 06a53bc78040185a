"""Run the documentation's three flows end to end, with a worker in this process.

``python -m workers.demo`` (or ``make demo``). The backend is
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
from collections.abc import Awaitable, Callable

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from stackshift import RunInfo, Stackshift, StackshiftError
from stackshift.logs import configure_logging

from . import QUEUES, register_all, services
from .uploads import rows_counter

LOCAL_URL = "redis://localhost:6379/0"
PING_TIMEOUT = 0.5
RESULT_TIMEOUT = 20.0
BACKOFF = 0.2  # first retry after 0.1-0.2 s (jittered), so the demo takes seconds


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
    return (
        f"  run {run.run_id}: {run.status}, attempt {run.attempt}\n"
        f"    steps recorded: {steps or 'none'}"
    )


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
    app = register_all(Stackshift(url, prefix=prefix), backoff=BACKOFF)
    try:
        async with app:
            checks = await run_flows(app, [signup_flow, payment_flow, upload_flow])
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
    print("all three flows behaved as documented")
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
