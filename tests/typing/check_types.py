"""Checked by mypy (`make lint`), not run: the types users see."""

from __future__ import annotations

import dataclasses
from typing import Any, assert_type

import msgspec

from stackshift import Job, JobContext, RunHandle, RunInfo, Stackshift

app = Stackshift("memory://")


class Payment(msgspec.Struct, rename="camel"):
    payment_id: str


@dataclasses.dataclass
class Receipt:
    number: int


async def verify(payment_id: str) -> Payment:
    return Payment(payment_id)


def issue_receipt(n: int) -> Receipt:
    return Receipt(n)


@app.job("typed")
async def typed(ctx: JobContext[Payment]) -> dict[str, bool]:
    assert_type(ctx.payload, Payment)
    assert_type(await ctx.step.run("verify", verify, ctx.payload.payment_id), Payment)
    assert_type(await ctx.step.run("receipt", issue_receipt, 3), Receipt)
    assert_type(await ctx.state.increment("k", 2), int)
    assert_type(ctx.attempt, int)
    return {"ok": True}


async def enqueue_side() -> None:
    handle = await app.queue("emails").enqueue("typed", {"paymentId": "p"})
    assert_type(handle, RunHandle[Any])
    assert_type(handle.run_id, str)
    assert_type(handle.deduplicated, bool)
    assert_type(await handle.result(timeout=5), Any)
    assert_type(await app.get_run(handle.run_id), RunInfo | None)
    assert_type(
        await app.queue("emails").enqueue_many("typed", []), list[RunHandle[Any]]
    )
    assert_type(await app.state.get("k"), int)


async def typed_handles() -> None:
    assert_type(typed, Job[Payment, dict[str, bool]])
    handle = await typed.enqueue(Payment("p_1"))
    assert_type(handle, RunHandle[dict[str, bool]])
    assert_type(await handle.result(timeout=5), dict[str, bool])
    assert_type(handle.result_sync(timeout=5), dict[str, bool])
    await typed.enqueue({"paymentId": "p"})  # type: ignore[arg-type]
    Payment(payment_idd="p")  # type: ignore[call-arg]


def sync_side() -> None:
    handle = app.queue("emails").enqueue_sync("typed", {"paymentId": "p"})
    assert_type(handle, RunHandle[Any])
    assert_type(typed.enqueue_sync(Payment("p")), RunHandle[dict[str, bool]])
    assert_type(app.get_run_sync(handle.run_id), RunInfo | None)


async def durable_steps(ctx: JobContext[Payment]) -> None:
    assert_type(await ctx.step.sleep("nap", 5), None)
    assert_type(await ctx.step.wait_for_event("w", event="refund.issued"), Any)
    assert_type(await ctx.step.invoke("i", "typed", {"paymentId": "p"}), Any)
    receipt = await app.send_event("payment.confirmed", {"paymentId": "p"}, id="e1")
    assert_type(receipt.duplicate, bool)
