"""The documentation's flows as worker apps, one module per flow.

- ``workers.signup``: ``sendVerificationEmail`` on queue ``emails``
- ``workers.payments``: ``provisionAfterPayment`` on queue ``payments``
- ``workers.uploads``: ``processUpload`` on queue ``uploads``

and, on events and durable time:

- ``workers.payment_events``: ``provisionOnPaymentConfirmed`` (made by each
  ``payment.confirmed`` event) and ``provisionWithRefundWindow`` (a child run,
  then a wait for ``refund.issued`` with a timeout), on queue ``payments``
- ``workers.onboarding``: ``onboardUser`` (a child run and a durable sleep) on
  queue ``emails``
- ``workers.reports``: the cron job ``dailyReport`` on queue ``reports``

Each module has its own ``app`` (``stackshift worker workers.uploads:app ...``);
they share the simulated services of ``workers.services``. ``register_all`` puts
the three documented jobs on one app, and ``register_events_and_time`` the
others, so one worker serves every flow (``workers.demo``, ``workers.api``).
"""

from __future__ import annotations

from stackshift import Stackshift
from stackshift.config import Duration

QUEUES = ("emails", "payments", "uploads")
ALL_QUEUES = (*QUEUES, "reports")


def register_all(app: Stackshift, *, backoff: Duration | None = None) -> Stackshift:
    """Register the three flows' jobs on ``app`` (with ``backoff``, if given)."""
    from . import payments, signup, uploads

    app.job("sendVerificationEmail", backoff=backoff)(signup.send_verification_email)
    app.job("provisionAfterPayment", backoff=backoff)(payments.provision_after_payment)
    app.job("processUpload", backoff=backoff)(uploads.process_upload)
    return app


def register_events_and_time(
    app: Stackshift,
    *,
    backoff: Duration | None = None,
    report_schedule: str | None = None,
) -> Stackshift:
    """Register the event-driven, sleeping and cron jobs on ``app``, which must
    have ``register_all``'s jobs too (their children). ``report_schedule``
    replaces the daily report's schedule (the demo ticks every second)."""
    from . import onboarding, payment_events, payments, reports

    app.job(
        "provisionOnPaymentConfirmed",
        on_event=payment_events.PAYMENT_CONFIRMED,
        queue=payment_events.QUEUE,
        backoff=backoff,
    )(payments.provision_after_payment)
    app.job("provisionWithRefundWindow", queue=payment_events.QUEUE, backoff=backoff)(
        payment_events.provision_with_refund_window
    )
    app.job("onboardUser", queue=onboarding.QUEUE, backoff=backoff)(
        onboarding.onboard_user
    )
    app.cron(
        "dailyReport",
        report_schedule or reports.SCHEDULE,
        queue=reports.QUEUE,
        backoff=backoff,
    )(reports.daily_report)
    return app
