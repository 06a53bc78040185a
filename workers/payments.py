"""Payment to provisioning: once a payment is confirmed, provision the
customer's resources, enable the paid plan and send the receipt. Each step is
recorded, so a retry resumes after the last step that succeeded.

Enqueue::

    await app.queue("payments").enqueue(
        "provisionAfterPayment",
        {"paymentId": "pay_1", "customerId": "cus_1"},
        idempotency_key="provision:pay_1",
    )

Serve: ``stackshift worker workers.payments:app --queue payments``
"""

from __future__ import annotations

import msgspec

from stackshift import JobContext, Stackshift

from .services import (
    enable_paid_plan,
    provision_customer_resources,
    send_receipt,
    verify_payment,
)

app = Stackshift()  # $STACKSHIFT_REDIS_URL, else redis://localhost:6379/0

QUEUE = "payments"


class Payment(msgspec.Struct, rename="camel", frozen=True):
    payment_id: str
    customer_id: str


class PaymentNotCompleteError(Exception):
    """The provider does not (yet) report the payment as paid."""


@app.job("provisionAfterPayment", queue=QUEUE)
async def provision_after_payment(ctx: JobContext[Payment]) -> dict[str, bool]:
    payment = await ctx.step.run(
        "verify-payment", verify_payment, ctx.payload.payment_id
    )
    if payment.status != "paid":
        # Fails this attempt; the run is retried with backoff. The step above is
        # recorded, so a retry sees the same status: this ends dead-lettered,
        # ready to be re-driven (`stackshift retry RUN_ID`) once it is sorted out.
        raise PaymentNotCompleteError("Payment is not complete")
    await ctx.step.run(
        "provision-customer-resources",
        provision_customer_resources,
        ctx.payload.customer_id,
    )
    await ctx.step.run("enable-plan", enable_paid_plan, ctx.payload.customer_id)
    await ctx.step.run("send-receipt", send_receipt, payment.customer_email)
    return {"provisioned": True}
