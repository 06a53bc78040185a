"""Simulated external services for the documented flows.

Each service prints one line saying what it did, and counts its calls in
``calls``, so a demo or a test can see which side effects ran, and how often.

``FAIL_ONCE`` names services that fail the first time they are called, with a
transient error, to show a retry resuming after its recorded steps. It starts
from the ``FAIL_ONCE`` environment variable (comma-separated service names), e.g.
``FAIL_ONCE=enable_paid_plan stackshift worker workers.payments:app -q payments``.
``FAIL_TIMES`` makes a service fail its next N calls (``enable_paid_plan=4``):
more than a job's attempts, and its run is dead-lettered until retried.
"""

from __future__ import annotations

import os
from collections import Counter

import msgspec

ROWS_PER_BATCH = 100
DEFAULT_FILE_ROWS = 250

# Service name -> number of calls, failed ones included.
calls: Counter[str] = Counter()

# Services whose next call fails (each is removed from the set as it fails).
FAIL_ONCE: set[str] = {
    name.strip() for name in os.environ.get("FAIL_ONCE", "").split(",") if name.strip()
}

# Service name -> how many of its next calls fail (FAIL_TIMES="name=N,...").
FAIL_TIMES: Counter[str] = Counter(
    {
        name.strip(): int(times)
        for name, _, times in (
            item.partition("=")
            for item in os.environ.get("FAIL_TIMES", "").split(",")
            if item.strip()
        )
    }
)

# The fake payment provider: payment id -> (status, customer email). A payment
# not listed here is paid, by customer@example.com.
payments: dict[str, tuple[str, str]] = {}

# The fake file store: file id -> number of CSV rows (default 250).
file_rows: dict[str, int] = {}


class ServiceUnavailableError(Exception):
    """A transient failure of an external service: retrying may succeed."""


class PaymentStatus(msgspec.Struct, frozen=True):
    payment_id: str
    status: str
    customer_email: str


class Resources(msgspec.Struct, frozen=True):
    customer_id: str
    database: str
    bucket: str


class DownloadedFile(msgspec.Struct, frozen=True):
    file_id: str
    content: str


class Row(msgspec.Struct, frozen=True, array_like=True):
    email: str
    name: str


class ParsedFile(msgspec.Struct, frozen=True):
    batches: list[list[Row]]
    total_rows: int


def reset() -> None:
    """Forget calls, pending failures and seeded data (between demo flows or tests)."""
    calls.clear()
    FAIL_ONCE.clear()
    FAIL_TIMES.clear()
    payments.clear()
    file_rows.clear()


def _call(service: str, name: str) -> None:
    """Count a call of ``name``; fail it if ``FAIL_ONCE`` or ``FAIL_TIMES`` says."""
    calls[name] += 1
    if name in FAIL_ONCE:
        FAIL_ONCE.discard(name)
        print(f"  [{service}] {name} failed: simulated outage (FAIL_ONCE)")
        raise ServiceUnavailableError(f"{service} is unavailable (simulated, once)")
    if FAIL_TIMES[name] > 0:
        FAIL_TIMES[name] -= 1
        left = FAIL_TIMES[name]
        print(f"  [{service}] {name} failed: simulated outage ({left} more to come)")
        raise ServiceUnavailableError(f"{service} is unavailable (simulated)")


# --- signup ------------------------------------------------------------------


async def mail_verification_link(user_id: str, email: str) -> str:
    """Send the verification mail; returns the mail provider's message id."""
    _call("email", "mail_verification_link")
    print(f"  [email] sent verification mail to {email}")
    return f"msg-verify-{user_id}"


async def send_welcome_mail(user_id: str, email: str) -> str:
    """Send the welcome mail; returns the mail provider's message id."""
    _call("email", "send_welcome_mail")
    print(f"  [email] sent the welcome mail to {email}")
    return f"msg-welcome-{user_id}"


# --- payments ----------------------------------------------------------------


async def verify_payment(payment_id: str) -> PaymentStatus:
    """Ask the payment provider whether ``payment_id`` was paid."""
    _call("payments", "verify_payment")
    status, email = payments.get(payment_id, ("paid", "customer@example.com"))
    print(f"  [payments] payment {payment_id} is {status}")
    return PaymentStatus(payment_id, status, email)


async def provision_customer_resources(customer_id: str) -> Resources:
    _call("infra", "provision_customer_resources")
    print(f"  [infra] provisioned a database and a bucket for {customer_id}")
    return Resources(customer_id, f"db-{customer_id}", f"bucket-{customer_id}")


async def enable_paid_plan(customer_id: str) -> str:
    """Switch the customer to the paid plan; returns the plan's name."""
    _call("billing", "enable_paid_plan")
    print(f"  [billing] enabled the paid plan for {customer_id}")
    return "pro"


async def revoke_paid_plan(customer_id: str) -> str:
    """Switch the customer back to the free plan (the payment was refunded)."""
    _call("billing", "revoke_paid_plan")
    print(f"  [billing] revoked the paid plan of {customer_id}")
    return "free"


async def send_receipt(email: str) -> str:
    """Mail the receipt; returns the mail provider's message id."""
    _call("email", "send_receipt")
    print(f"  [email] sent the receipt to {email}")
    return f"msg-receipt-{email}"


# --- uploads -----------------------------------------------------------------


async def download_file(file_id: str) -> DownloadedFile:
    _call("storage", "download_file")
    count = file_rows.get(file_id, DEFAULT_FILE_ROWS)
    lines = ["email,name", *(f"user{i}@example.com,User {i}" for i in range(count))]
    print(f"  [storage] downloaded {file_id}.csv ({count} rows)")
    return DownloadedFile(file_id, "\n".join(lines))


async def parse_csv(file: DownloadedFile) -> ParsedFile:
    _call("parser", "parse_csv")
    rows = [Row(*line.split(",", 1)) for line in file.content.splitlines()[1:]]
    batches = [
        rows[i : i + ROWS_PER_BATCH] for i in range(0, len(rows), ROWS_PER_BATCH)
    ]
    print(
        f"  [parser] parsed {file.file_id}.csv: {len(rows)} rows, {len(batches)} batches"
    )
    return ParsedFile(batches, len(rows))


async def import_rows(batch: list[Row]) -> None:
    _call("db", "import_rows")
    print(f"  [db] imported {len(batch)} rows")


async def mark_file_complete(file_id: str) -> bool:
    _call("storage", "mark_file_complete")
    print(f"  [storage] marked {file_id} complete")
    return True


# --- reports -----------------------------------------------------------------


async def build_daily_report(tick_ms: int) -> str:
    """Build the report of the schedule's tick ``tick_ms``; returns its name."""
    _call("reports", "build_daily_report")
    name = f"report-{tick_ms}"
    print(f"  [reports] built {name}")
    return name
