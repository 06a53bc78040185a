"""The outermost layer: security headers on every response, and the ``auth``
hook asked before anything else runs (pages, POSTs, static files alike)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .csrf import Refuse

AuthHook = Callable[[Request], bool | Awaitable[bool]]

# Scripts and styles only from the dashboard's own static files (no inline
# script, no inline style), no framing, forms and fetches only to itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _is_static(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    relative = path[len(root) :] if root and path.startswith(root) else path
    return relative.startswith("/static/")


class GuardMiddleware:
    """Adds the security headers, then lets a request through only when the
    ``auth`` hook says so: False refuses it (403); an ``HTTPException`` the hook
    raises is answered as it says (e.g. 401 with ``WWW-Authenticate``)."""

    def __init__(self, app: ASGIApp, *, auth: AuthHook | None, refuse: Refuse) -> None:
        self.app = app
        self.auth = auth
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send, cache=_is_static(scope))
        if self.auth is not None:
            try:
                verdict = self.auth(Request(scope, receive))
                allowed = await verdict if inspect.isawaitable(verdict) else verdict
            except HTTPException as exc:
                await _answer(send, exc)
                return
            if not allowed:
                await self.refuse(scope, receive, send, 403, "Not allowed.")
                return
        await self.app(scope, receive, send)


def _with_headers(send: Send, *, cache: bool) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v)
                for k, v in message.get("headers", [])
                if cache or k.lower() != b"cache-control"
            ]
            headers += SECURITY_HEADERS
            if not cache:  # pages show live data: never from a cache
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return sending


async def _answer(send: Send, exc: HTTPException) -> None:
    body = (exc.detail or "").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    headers += [
        (k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()
    ]
    headers.append((b"content-length", str(len(body)).encode()))
    await send(
        {"type": "http.response.start", "status": exc.status_code, "headers": headers}
    )
    await send({"type": "http.response.body", "body": body})
