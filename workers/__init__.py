"""The documentation's three flows as worker apps, one module per flow.

- ``workers.signup``: ``sendVerificationEmail`` on queue ``emails``
- ``workers.payments``: ``provisionAfterPayment`` on queue ``payments``
- ``workers.uploads``: ``processUpload`` on queue ``uploads``

Each module has its own ``app`` (``stackshift worker workers.uploads:app ...``);
they share the simulated services of ``workers.services``. ``register_all`` puts
the three jobs on one app, so one worker serves every flow (``workers.demo``).
"""

from __future__ import annotations

from stackshift import Stackshift
from stackshift.config import Duration

QUEUES = ("emails", "payments", "uploads")


def register_all(app: Stackshift, *, backoff: Duration | None = None) -> Stackshift:
    """Register the three flows' jobs on ``app`` (with ``backoff``, if given)."""
    from . import payments, signup, uploads

    app.job("sendVerificationEmail", backoff=backoff)(signup.send_verification_email)
    app.job("provisionAfterPayment", backoff=backoff)(payments.provision_after_payment)
    app.job("processUpload", backoff=backoff)(uploads.process_upload)
    return app
