"""CSRF protection: a signed per-browser token, submitted back with every POST.

The token lives in a cookie (HttpOnly, SameSite=Strict, scoped to the
dashboard's path) as ``<nonce>.<HMAC of the nonce>``; every form carries the same
value in a hidden field. A POST passes only when the cookie's signature is ours
and the field equals the cookie (compared in constant time). The signature stops
a cookie planted by a sibling subdomain from being accepted; SameSite stops
other sites' forms from sending the cookie at all.

The check runs in the middleware, before any route, so no POST can skip it; it
reads the (small, url-encoded) form and hands the same body on to the route.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "stackshift_csrf"
FIELD = "csrf_token"
SCOPE_KEY = "stackshift.csrf"  # where routes find the token for their forms
MAX_FORM_BYTES = 64 * 1024  # the dashboard's forms hold a token and a few ids
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Refuse = Callable[[Scope, Receive, Send, int, str], Awaitable[None]]


class CsrfTokens:
    """Makes and checks tokens with a key of this process (or the one given)."""

    def __init__(self, secret: str | bytes | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        self._key = secret or os.urandom(32)

    def _sign(self, nonce: str) -> str:
        digest = hmac.new(self._key, nonce.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def new(self) -> str:
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign(nonce)}"

    def is_ours(self, token: str | None) -> bool:
        """True when ``token`` was made by ``new`` with this key."""
        if not token or len(token) > 200:
            return False
        nonce, _, signature = token.partition(".")
        return hmac.compare_digest(
            signature.encode(errors="replace"), self._sign(nonce).encode()
        )

    def accepts(self, cookie: str | None, submitted: str | None) -> bool:
        """True when the cookie is ours and the form sent back the same token."""
        if cookie is None or submitted is None or not self.is_ours(cookie):
            return False
        return hmac.compare_digest(
            cookie.encode(errors="replace"), submitted.encode(errors="replace")
        )


def form_fields(body: bytes) -> dict[str, str]:
    """A url-encoded form as a dict (the last value of a repeated field)."""
    parsed = parse_qs(body.decode(errors="replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header: as if none
                return None
            morsel = jar.get(COOKIE)
            return morsel.value if morsel is not None else None
    return None


def _header(scope: Scope, wanted: bytes) -> str:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return str(value.decode("latin-1"))
    return ""


class CsrfMiddleware:
    """Gives every request a token (setting the cookie when it had none) and
    refuses, with 403, any non-GET request whose form does not carry it."""

    def __init__(self, app: ASGIApp, *, tokens: CsrfTokens, refuse: Refuse) -> None:
        self.app = app
        self.tokens = tokens
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = _cookie(scope)
        fresh = cookie is None or not self.tokens.is_ours(cookie)
        token = self.tokens.new() if fresh or cookie is None else cookie
        scope[SCOPE_KEY] = token
        if scope["method"] not in SAFE_METHODS:
            body = await self._checked_body(scope, receive, send, cookie)
            if body is None:
                return
            receive = _replay(body, receive)
        if fresh:
            send = self._setting_cookie(scope, send, token)
        await self.app(scope, receive, send)

    async def _checked_body(
        self, scope: Scope, receive: Receive, send: Send, cookie: str | None
    ) -> bytes | None:
        """The request body when its form carries the token; else refuse, None."""
        kind = _header(scope, b"content-type").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            await self.refuse(
                scope,
                receive,
                send,
                403,
                "Only the dashboard's own forms may change anything: nothing was "
                "changed.",
            )
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > MAX_FORM_BYTES:
                await self.refuse(scope, receive, send, 413, "Form too large.")
                return None
            if not message.get("more_body", False):
                break
        if not self.tokens.accepts(cookie, form_fields(bytes(body)).get(FIELD)):
            await self.refuse(
                scope,
                receive,
                send,
                403,
                "This form did not come from this dashboard, or it has expired: "
                "nothing was changed. Reload the page and try again.",
            )
            return None
        return bytes(body)

    @staticmethod
    def _setting_cookie(scope: Scope, send: Send, token: str) -> Send:
        path = scope.get("root_path", "") or "/"
        attributes = f"{COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict"
        if scope.get("scheme") == "https":
            attributes += "; Secure"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", attributes.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        return sending


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body on, then the real one."""
    sent = False

    async def replaying() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replaying
