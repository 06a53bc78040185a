"""The example web API: FastAPI endpoints that start the documented flows, send
their events and show their progress. The web app registers the jobs only to
validate payloads at enqueue; workers run them.

Serve it, and a worker for its queues (``pip install '.[api]'``)::

    uvicorn workers.api:api
    stackshift worker workers.api:app -q emails -q payments -q uploads -q reports

Endpoints (JSON bodies and replies, camelCase):

- ``POST /signup``: the verification email, once per user (idempotency key)
- ``POST /onboarding``: verification email as a child run, then a delayed welcome
- ``POST /payments/{payment_id}/provision``: the payment flow, enqueued
- ``POST /payments/{payment_id}/confirmed``: sends ``payment.confirmed``; the
  subscribed job ``provisionOnPaymentConfirmed`` runs once per payment
- ``POST /payments/{payment_id}/refund-window``: provisions, then waits for a
  ``refund.issued`` event of that payment until the window closes
- ``POST /payments/{payment_id}/refunds``: sends ``refund.issued``
- ``POST /uploads/{file_id}`` and ``GET /uploads/{file_id}/progress``: the CSV
  import, and its row counter ``files:<file_id>:rows``
- ``GET /runs/{run_id}``: a run's record (status, steps, what it waits for)

A request's ``X-Correlation-ID`` (else ``X-Request-ID``) header becomes the
correlation id of the runs and events it makes, and is echoed in the reply.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
import structlog
from fastapi import Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stackshift import InvalidNameError, PayloadError, Stackshift, StoreError

from . import register_all, register_events_and_time
from .onboarding import WELCOME_DELAY_SECONDS
from .payment_events import PAYMENT_CONFIRMED, REFUND_ISSUED, REFUND_WINDOW_SECONDS
from .uploads import rows_counter

# Ids that end up in idempotency keys, event ids and counter names.
ID = r"^[A-Za-z0-9_-]{1,64}$"
# Printable ASCII, no spaces: what may go on every log line of a run.
CORRELATION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
CORRELATION_HEADER = "X-Correlation-ID"
REQUEST_HEADER = "X-Request-ID"

PathId = Annotated[str, Path(pattern=ID)]


# --- correlation ---------------------------------------------------------------


class CorrelationIdMiddleware:
    """Binds the request's correlation id with structlog's contextvars, where
    stackshift reads it for each run and event the request makes (and the
    app's own log lines get it too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = headers.get(REQUEST_HEADER)
        correlation_id = headers.get(CORRELATION_HEADER) or request_id
        if correlation_id is None:
            await self.app(scope, receive, send)
            return
        for value in (correlation_id, request_id):
            if value is not None and not CORRELATION_ID.match(value):
                reply = JSONResponse(
                    {
                        "detail": f"{CORRELATION_HEADER} and {REQUEST_HEADER} must "
                        "be 1 to 128 printable ASCII characters, without spaces"
                    },
                    status_code=400,
                )
                await reply(scope, receive, send)
                return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[CORRELATION_HEADER] = correlation_id
            await send(message)

        bound: dict[str, str] = {"correlation_id": correlation_id}
        if request_id is not None:
            bound["request_id"] = request_id
        with structlog.contextvars.bound_contextvars(**bound):
            await self.app(scope, receive, send_with_id)


# --- bodies and replies ------------------------------------------------------------


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )


class SignupBody(CamelModel):
    user_id: str = Field(pattern=ID)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)


class OnboardingBody(SignupBody):
    welcome_delay_seconds: float = Field(WELCOME_DELAY_SECONDS, ge=0, le=30 * 86400)


class CustomerBody(CamelModel):
    customer_id: str = Field(pattern=ID)


class RefundWindowBody(CustomerBody):
    refund_window_seconds: float = Field(REFUND_WINDOW_SECONDS, ge=0, le=90 * 86400)


class RefundBody(CamelModel):
    refund_id: str = Field(pattern=ID)


class Enqueued(CamelModel):
    run_id: str
    deduplicated: bool


class EventSent(CamelModel):
    event_id: str
    duplicate: bool


class UploadProgress(CamelModel):
    file_id: str
    rows_imported: int


# --- endpoints ------------------------------------------------------------------------


def get_jobs(request: Request) -> Stackshift:
    """The app the API enqueues with (``create_api``'s)."""
    jobs: Stackshift = request.app.state.jobs
    return jobs


Jobs = Annotated[Stackshift, Depends(get_jobs)]


async def enqueue(
    jobs: Stackshift, queue: str, job: str, payload: Any, key: str | None = None
) -> Enqueued:
    handle = await jobs.queue(queue).enqueue(job, payload, idempotency_key=key)
    return Enqueued(run_id=handle.run_id, deduplicated=handle.deduplicated)


async def signup(body: SignupBody, jobs: Jobs) -> Enqueued:
    """Send the verification email: one run per user, however often this is
    retried."""
    payload = {"userId": body.user_id, "email": body.email}
    return await enqueue(
        jobs, "emails", "sendVerificationEmail", payload, f"verify:{body.user_id}"
    )


async def onboard(body: OnboardingBody, jobs: Jobs) -> Enqueued:
    """The verification email, then the welcome mail after a delay."""
    payload = body.model_dump(by_alias=True)
    return await enqueue(
        jobs, "emails", "onboardUser", payload, f"onboard:{body.user_id}"
    )


async def provision(payment_id: PathId, body: CustomerBody, jobs: Jobs) -> Enqueued:
    """Enqueue the payment flow for a confirmed payment (once per payment)."""
    payload = {"paymentId": payment_id, "customerId": body.customer_id}
    return await enqueue(
        jobs, "payments", "provisionAfterPayment", payload, f"provision:{payment_id}"
    )


async def payment_confirmed(
    payment_id: PathId, body: CustomerBody, jobs: Jobs
) -> EventSent:
    """Send ``payment.confirmed``; the event id is the payment's, so a webhook
    delivered twice makes one run."""
    data = {"paymentId": payment_id, "customerId": body.customer_id}
    sent = await jobs.send_event(PAYMENT_CONFIRMED, data, id=payment_id)
    return EventSent(event_id=sent.id, duplicate=sent.duplicate)


async def provision_with_refund_window(
    payment_id: PathId, body: RefundWindowBody, jobs: Jobs
) -> Enqueued:
    """Provision, then revoke the plan if a refund comes within the window."""
    payload = {"paymentId": payment_id, **body.model_dump(by_alias=True)}
    key = f"refund-window:{payment_id}"
    return await enqueue(jobs, "payments", "provisionWithRefundWindow", payload, key)


async def refund_issued(payment_id: PathId, body: RefundBody, jobs: Jobs) -> EventSent:
    """Send ``refund.issued`` (once per refund id): it resumes the payment's
    run waiting in its refund window, if there is one."""
    data = {"paymentId": payment_id, "refundId": body.refund_id}
    sent = await jobs.send_event(REFUND_ISSUED, data, id=body.refund_id)
    return EventSent(event_id=sent.id, duplicate=sent.duplicate)


async def process_upload(file_id: PathId, jobs: Jobs) -> Enqueued:
    """Import the file's rows."""
    return await enqueue(jobs, "uploads", "processUpload", {"fileId": file_id})


async def upload_progress(file_id: PathId, jobs: Jobs) -> UploadProgress:
    """Rows imported so far: the run's exact counter."""
    rows = await jobs.state.get(rows_counter(file_id))
    return UploadProgress(file_id=file_id, rows_imported=rows)


async def show_run(run_id: str, jobs: Jobs) -> Response:
    """A run's record, as ``stackshift show --json`` prints it."""
    run = await jobs.get_run(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id} (or its record expired)")
    return Response(msgspec.json.encode(run), media_type="application/json")


async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    structlog.get_logger("workers.api").error("store_failed", error=str(exc))
    return JSONResponse(
        {"detail": "the job store (Redis) failed or could not be reached"},
        status_code=503,
    )


# --- the app ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    jobs: Stackshift = api.state.jobs
    try:
        yield
    finally:
        await jobs.close()


def create_api(jobs: Stackshift) -> FastAPI:
    """The web API over ``jobs``, which it closes when it shuts down."""
    api = FastAPI(title="stackshift example API", lifespan=lifespan)
    api.state.jobs = jobs
    api.add_middleware(CorrelationIdMiddleware)
    api.add_exception_handler(PayloadError, invalid_input)
    api.add_exception_handler(InvalidNameError, invalid_input)
    api.add_exception_handler(StoreError, store_unavailable)
    accepted: dict[str, Any] = {"status_code": 202}
    api.post("/signup", **accepted)(signup)
    api.post("/onboarding", **accepted)(onboard)
    api.post("/payments/{payment_id}/provision", **accepted)(provision)
    api.post("/payments/{payment_id}/confirmed", **accepted)(payment_confirmed)
    api.post("/payments/{payment_id}/refund-window", **accepted)(
        provision_with_refund_window
    )
    api.post("/payments/{payment_id}/refunds", **accepted)(refund_issued)
    api.post("/uploads/{file_id}", **accepted)(process_upload)
    api.get("/uploads/{file_id}/progress")(upload_progress)
    api.get("/runs/{run_id}")(show_run)
    return api


# One app for the process: it enqueues from any request, and `stackshift
# worker workers.api:app` runs every flow's jobs.
app = register_events_and_time(register_all(Stackshift()))
api = create_api(app)
