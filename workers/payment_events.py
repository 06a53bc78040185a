"""The payment flow driven by events: two variants of ``workers.payments``.

- ``provisionOnPaymentConfirmed``: the payment flow's job, subscribed to the
  ``payment.confirmed`` event. Each event makes one run (a webhook delivered
  twice, sent with the same event id, makes one)::

      await app.send_event(
          "payment.confirmed",
          {"paymentId": "pay_1", "customerId": "cus_1"},
          id="pay_1",
      )

- ``provisionWithRefundWindow``: provisions the customer (``provisionAfterPayment``
  as a child run), then waits for a ``refund.issued`` event of that payment
  until the refund window closes, without holding a worker. A refund within
  the window revokes the paid plan; past it, the run ends as provisioned::

      await app.queue("payments").enqueue(
          "provisionWithRefundWindow",
          {"paymentId": "pay_1", "customerId": "cus_1", "refundWindowSeconds": 1209600},
      )
      await app.send_event("refund.issued", {"paymentId": "pay_1", "refundId": "re_1"})

Serve: ``stackshift worker workers.payment_events:app --queue payments``
"""

from __future__ import annotations

from typing import Any

import msgspec

from stackshift import JobContext, JobFailed, NonRetriableError, Stackshift

from .payments import Payment, provision_after_payment
from .services import revoke_paid_plan

app = Stackshift()  # $STACKSHIFT_REDIS_URL, else redis://localhost:6379/0

QUEUE = "payments"
PAYMENT_CONFIRMED = "payment.confirmed"
REFUND_ISSUED = "refund.issued"
REFUND_WINDOW_SECONDS = 14 * 24 * 3600.0

# The documented job itself: the child run of the refund-window variant.
app.job("provisionAfterPayment", queue=QUEUE)(provision_after_payment)
# The same handler, started by each payment.confirmed event (its data is the
# payload: {"paymentId": ..., "customerId": ...}).
app.job("provisionOnPaymentConfirmed", on_event=PAYMENT_CONFIRMED, queue=QUEUE)(
    provision_after_payment
)


class PaymentWithRefundWindow(msgspec.Struct, rename="camel", frozen=True):
    payment_id: str
    customer_id: str
    refund_window_seconds: float = REFUND_WINDOW_SECONDS


class Refund(msgspec.Struct, rename="camel", frozen=True):
    """The data of a ``refund.issued`` event."""

    payment_id: str
    refund_id: str


@app.job("provisionWithRefundWindow", queue=QUEUE)
async def provision_with_refund_window(
    ctx: JobContext[PaymentWithRefundWindow],
) -> dict[str, Any]:
    p = ctx.payload
    try:
        await ctx.step.invoke(
            "provision",
            "provisionAfterPayment",
            Payment(p.payment_id, p.customer_id),
            queue=QUEUE,
        )
    except JobFailed as exc:
        # The child used its own retries already; retrying the parent would
        # only replay the recorded failure.
        raise NonRetriableError(f"provisioning failed: {exc}") from exc
    # Matched on the payment's id through the event index; a refund sent while
    # the child ran (before this wait is registered) is found too.
    refund: Refund | None = await ctx.step.wait_for_event(
        "await-refund",
        REFUND_ISSUED,
        match={"paymentId": p.payment_id},
        timeout=p.refund_window_seconds,
        returns=Refund,
    )
    if refund is None:  # the window closed without a refund
        return {"provisioned": True, "refunded": False}
    await ctx.step.run("revoke-plan", revoke_paid_plan, p.customer_id)
    return {"provisioned": True, "refunded": True, "refundId": refund.refund_id}
