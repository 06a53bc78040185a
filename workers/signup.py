"""Signup flow: send the verification email, once per user however often the
signup request is retried (the enqueuer passes ``idempotency_key``).

Enqueue (from a web handler)::

    await app.queue("emails").enqueue(
        "sendVerificationEmail",
        {"userId": "user_123", "email": "ada@example.com"},
        idempotency_key="verify:user_123",
    )

Serve: ``stackshift worker workers.signup:app --queue emails``
"""

from __future__ import annotations

import msgspec

from stackshift import JobContext, Stackshift

from .services import mail_verification_link

app = Stackshift()  # $STACKSHIFT_REDIS_URL, else redis://localhost:6379/0

QUEUE = "emails"


class Signup(msgspec.Struct, rename="camel", frozen=True):
    user_id: str
    email: str


@app.job("sendVerificationEmail", queue=QUEUE)
async def send_verification_email(ctx: JobContext[Signup]) -> dict[str, str]:
    message_id = await ctx.step.run(
        "send-email", mail_verification_link, ctx.payload.user_id, ctx.payload.email
    )
    return {"messageId": message_id}
