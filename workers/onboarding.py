"""Onboarding: send the verification email (``sendVerificationEmail`` as a
child run), wait a while without holding a worker, then send the welcome mail.

Enqueue::

    await app.queue("emails").enqueue(
        "onboardUser",
        {"userId": "user_123", "email": "ada@example.com", "welcomeDelaySeconds": 3600},
        idempotency_key="onboard:user_123",
    )

Serve: ``stackshift worker workers.onboarding:app --queue emails``
"""

from __future__ import annotations

import msgspec

from stackshift import JobContext, Stackshift

from .services import send_welcome_mail
from .signup import Signup, send_verification_email

app = Stackshift()  # $STACKSHIFT_REDIS_URL, else redis://localhost:6379/0

QUEUE = "emails"
WELCOME_DELAY_SECONDS = 3600.0

# The child job: registered here too, so one worker serves the whole flow.
app.job("sendVerificationEmail", queue=QUEUE)(send_verification_email)


class Onboarding(msgspec.Struct, rename="camel", frozen=True):
    user_id: str
    email: str
    welcome_delay_seconds: float = WELCOME_DELAY_SECONDS


@app.job("onboardUser", queue=QUEUE)
async def onboard_user(ctx: JobContext[Onboarding]) -> dict[str, str]:
    p = ctx.payload
    # A child run: this run suspends until it ends, and gets its result back.
    verification: dict[str, str] = await ctx.step.invoke(
        "verify-email",
        "sendVerificationEmail",
        Signup(p.user_id, p.email),
        queue=QUEUE,
    )
    # A durable sleep: the run gives its worker slot back until it is due.
    await ctx.step.sleep("welcome-delay", p.welcome_delay_seconds)
    welcome = await ctx.step.run("send-welcome", send_welcome_mail, p.user_id, p.email)
    return {
        "verificationMessageId": verification["messageId"],
        "welcomeMessageId": welcome,
    }
