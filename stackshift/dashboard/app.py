"""``create_app``: the dashboard as an ASGI app, to serve or to mount.

Every link and form is built from the request's ``root_path``, so the app works
at ``/`` and mounted anywhere (``api.mount("/jobs", create_app(app))``). Pages
read and write only through ``DashboardData``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ..app import Stackshift
from ..errors import InvalidNameError, StackshiftError, StoreError
from ..serialization import RunInfo
from ..store.keys import check_name
from .charts import throughput, waterfall
from .csrf import FIELD, SCOPE_KEY, CsrfMiddleware, CsrfTokens, form_fields
from .data import FIND_KINDS, STATUSES, DashboardData, QueueSummary, RunPage
from .guard import AuthHook, GuardMiddleware
from .render import Unavailable, environment, optional

STATIC_FILES = ("dashboard.css", "favicon.svg", "live.js")
MAX_QUERY_TEXT = 1024  # longest id, key or cursor a query may carry

# Outcomes a mutation redirects with (?done=...): fixed text, never echoed input.
DONE = {
    "retried": "Re-driven: the run is queued again and resumes after its last "
    "recorded step.",
    "cancelled": "Cancelled.",
    "retried_all": "Re-drove {n} dead-lettered runs.",
}


def _asset_version() -> str:
    """A hash of the static files, so browsers fetch them again after an upgrade."""
    digest = hashlib.sha256()
    static = resources.files("stackshift.dashboard") / "static"
    for name in STATIC_FILES:
        digest.update(static.joinpath(name).read_bytes())
    return digest.hexdigest()[:12]


class Dashboard:
    """The pages: one method per route, each reading through ``DashboardData``."""

    def __init__(
        self, data: DashboardData, *, title: str, refresh_seconds: float
    ) -> None:
        self.data = data
        self.title = title
        self.refresh_ms = max(250, int(refresh_seconds * 1000))
        self.templates = environment()
        self.version = _asset_version()
        self.app: Starlette | None = None  # set by create_app: it builds the URLs

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.queues, name="queues"),
            Route("/runs", self.runs, name="runs"),
            Route("/runs/{run_id}", self.run, name="run"),
            Route("/runs/{run_id}/retry", self.retry, name="retry", methods=["POST"]),
            Route(
                "/runs/{run_id}/cancel", self.cancel, name="cancel", methods=["POST"]
            ),
            Route("/dead", self.dead, name="dead"),
            Route("/dead/retry-all", self.confirm_retry_all, name="confirm_retry_all"),
            Route(
                "/dead/retry-all", self.retry_all, name="retry_all", methods=["POST"]
            ),
            Route("/counters", self.counters, name="counters"),
            Route("/events", self.events, name="events"),
            Route("/crons", self.crons, name="crons"),
            Mount(
                "/static",
                StaticFiles(packages=[("stackshift.dashboard", "static")]),
                name="static",
            ),
        ]

    # --- rendering ----------------------------------------------------------

    def _url(self, scope: Scope) -> Callable[..., str]:
        """``url(name, query=None, **path_params)`` under this mount's root path."""
        assert self.app is not None
        root: str = scope.get("root_path", "")
        app = self.app

        def url(
            name: str, query: Mapping[str, Any] | None = None, **params: Any
        ) -> str:
            path = root + app.url_path_for(name, **params)
            kept = {k: v for k, v in (query or {}).items() if v not in (None, "")}
            return path + ("?" + urlencode(kept) if kept else "")

        return url

    def _render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        partial: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        """The page, or only its live part when the page script asks (?partial=1)."""
        live = partial is not None and request.query_params.get("partial") == "1"
        url = self._url(request.scope)
        query = {k: v for k, v in request.query_params.items() if k != "partial"}
        html = self.templates.get_template(partial if live and partial else template)
        page: dict[str, Any] = {
            "title": self.title,
            "url": url,
            "static": lambda name: url("static", query={"v": self.version}, path=name),
            "csrf_field": FIELD,
            "csrf_token": request.scope.get(SCOPE_KEY, ""),
            "refresh_ms": self.refresh_ms,
            "live_url": "?" + urlencode({**query, "partial": "1"}),
            "now": datetime.now(UTC),
            "statuses": STATUSES,
            "bare": False,
            "done": None,
        }
        body = html.render({**page, **context})
        return HTMLResponse(body, status_code=status)

    def _message(
        self, request: Request, status: int, text: str, *, bare: bool = False
    ) -> HTMLResponse:
        return self._render(
            request,
            "message.html",
            {"page": "", "status": status, "text": text, "bare": bare},
            status=status,
        )

    async def refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, text: str
    ) -> None:
        """Answer a request the middleware stopped (CSRF), with a page."""
        await self._message(Request(scope, receive), status, text)(scope, receive, send)

    async def refuse_bare(
        self, scope: Scope, receive: Receive, send: Send, status: int, text: str
    ) -> None:
        """Answer a request ``auth`` refused: no navigation, nothing about the app."""
        response = self._message(Request(scope, receive), status, text, bare=True)
        await response(scope, receive, send)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self._message(request, exc.status_code, exc.detail)

    async def store_error(self, request: Request, exc: Exception) -> Response:
        return self._message(request, 503, f"Redis did not answer as expected: {exc}")

    def _redirect(self, request: Request, name: str, **query: Any) -> Response:
        params = {k: v for k, v in query.items() if k != "run_id"}
        path = {"run_id": query["run_id"]} if "run_id" in query else {}
        return RedirectResponse(
            self._url(request.scope)(name, query=params, **path), status_code=303
        )

    @staticmethod
    def _done(request: Request) -> str | None:
        text = DONE.get(request.query_params.get("done", ""))
        count = request.query_params.get("n", "")
        return text.format(n=int(count) if count.isdigit() else "the") if text else None

    # --- query parameters -----------------------------------------------------

    async def _queue_param(
        self, request: Request
    ) -> tuple[str, list[str] | Unavailable]:
        """The ``queue`` asked for (default: the first shown) and the queues shown."""
        queues = await optional(self.data.queues())
        asked = request.query_params.get("queue", "")
        if not asked:
            asked = (
                "default"
                if isinstance(queues, Unavailable) or not queues
                else queues[0]
            )
        return await self.data.check_queue(asked), queues

    @staticmethod
    def _text_param(request: Request, name: str) -> str:
        value = request.query_params.get(name, "").strip()
        if len(value) > MAX_QUERY_TEXT:
            raise InvalidNameError(
                f"{name} is too long (over {MAX_QUERY_TEXT} characters)"
            )
        return value

    # --- pages ------------------------------------------------------------------

    async def queues(self, request: Request) -> Response:
        queues = await optional(self.data.queues())
        rows: list[dict[str, Any]] = []
        if not isinstance(queues, Unavailable):
            rows = list(await asyncio.gather(*(self._queue_row(q) for q in queues)))
        return self._render(
            request,
            "queues.html",
            {"page": "queues", "queues": queues, "rows": rows},
            partial="_queues.html",
        )

    async def _queue_row(self, queue: str) -> dict[str, Any]:
        summary: QueueSummary = await self.data.queue_summary(queue)
        minutes = await optional(self.data.throughput(queue))
        return {
            "summary": summary,
            "throughput": minutes
            if isinstance(minutes, Unavailable)
            else throughput(minutes),
            "oldest": await optional(self.data.oldest_queued_age(queue)),
        }

    async def _runs_query(self, request: Request) -> dict[str, Any]:
        """The runs page's query, validated (``InvalidNameError`` if not)."""
        queue, queues = await self._queue_param(request)
        status = self._text_param(request, "status")
        if status and status not in STATUSES:
            raise InvalidNameError(f"unknown status {status!r}")
        job = self._text_param(request, "job")
        if job:
            check_name(job, "job")
        by = request.query_params.get("by", "run_id")
        return {
            "queue": queue,
            "queues": queues,
            "status": status,
            "job": job,
            "cursor": self._text_param(request, "cursor") or None,
            "find": self._text_param(request, "find"),
            "by": by if by in FIND_KINDS else "run_id",
        }

    async def _find(
        self, queue: str, by: str, text: str
    ) -> list[RunInfo] | Unavailable:
        if by == "run_id":
            run = await self.data.get_run(text)
            return [run] if run is not None else []
        if by == "idempotency_key":
            one = await optional(self.data.find_by_idempotency_key(queue, text))
            return one if isinstance(one, Unavailable) else [one] if one else []
        return await optional(self.data.find_by_correlation_id(text))

    async def runs(self, request: Request) -> Response:
        try:
            query = await self._runs_query(request)
        except InvalidNameError as exc:
            return self._message(request, 400, str(exc))
        found: list[RunInfo] | Unavailable | None = None
        listing: RunPage | Unavailable | None = None
        if query["find"]:
            found = await self._find(query["queue"], query["by"], query["find"])
            if query["by"] == "run_id" and isinstance(found, list) and found:
                return self._redirect(request, "run", run_id=found[0].run_id)
        else:
            listing = await optional(
                self.data.list_runs(
                    query["queue"],
                    status=query["status"] or None,
                    job=query["job"] or None,
                    cursor=query["cursor"],
                )
            )
        context = {"page": "runs", "found": found, "listing": listing, **query}
        return self._render(request, "runs.html", context, partial="_runs.html")

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = await self.data.get_run(run_id)
        if run is None:
            return self._message(
                request,
                404,
                f"No run {run_id}: the id is wrong, or its record expired.",
            )
        attempts, suspension, children, counters = await asyncio.gather(
            optional(self.data.attempts(run)),
            optional(self.data.suspension(run)),
            optional(self.data.child_runs(run)),
            optional(self.data.run_counters(run)),
        )
        context = {
            "page": "runs",
            "run": run,
            "done": self._done(request),
            "attempts": attempts,
            "suspension": suspension,
            "children": children,
            "counters": counters,
            "waterfall": waterfall(run, datetime.now(UTC)),
        }
        return self._render(request, "run.html", context, partial="_run.html")

    async def dead(self, request: Request) -> Response:
        try:
            queue, queues = await self._queue_param(request)
        except InvalidNameError as exc:
            return self._message(request, 400, str(exc))
        runs, count = await asyncio.gather(
            self.data.dead_letters(queue), self.data.dead_count(queue)
        )
        context = {
            "page": "dead",
            "queue": queue,
            "queues": queues,
            "runs": runs,
            "count": count,
            "done": self._done(request),
        }
        return self._render(request, "dead.html", context, partial="_dead.html")

    async def confirm_retry_all(self, request: Request) -> Response:
        try:
            queue, _ = await self._queue_param(request)
        except InvalidNameError as exc:
            return self._message(request, 400, str(exc))
        count = await self.data.dead_count(queue)
        return self._render(
            request, "retry_all.html", {"page": "dead", "queue": queue, "count": count}
        )

    async def counters(self, request: Request) -> Response:
        value: int | None = None
        error: str | None = None
        try:
            key = self._text_param(request, "key")
            if key:
                value = await self.data.counter(key)
        except InvalidNameError as exc:
            key, error = "", str(exc)
        context = {
            "page": "counters",
            "key": key,
            "value": value,
            "error": error,
            "known": await optional(self.data.counters()),
        }
        return self._render(request, "counters.html", context, partial="_counters.html")

    async def events(self, request: Request) -> Response:
        context = {
            "page": "events",
            "events": await optional(self.data.recent_events()),
        }
        return self._render(request, "events.html", context, partial="_events.html")

    async def crons(self, request: Request) -> Response:
        context = {"page": "crons", "crons": await optional(self.data.crons())}
        return self._render(request, "crons.html", context, partial="_crons.html")

    # --- mutations (POST; the CSRF middleware has checked the token) -------------

    async def retry(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await self._mutate(
            request, self.data.retry(run_id), "run", run_id=run_id, done="retried"
        )

    async def cancel(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await self._mutate(
            request, self.data.cancel(run_id), "run", run_id=run_id, done="cancelled"
        )

    async def retry_all(self, request: Request) -> Response:
        form = form_fields(await request.body())
        try:
            queue = await self.data.check_queue(form.get("queue", ""))
        except InvalidNameError as exc:
            return self._message(request, 400, str(exc))
        try:
            count = await self.data.retry_all_dead(queue)
        except NotImplementedError:
            return self._message(request, 501, "Retry all is not available yet.")
        return self._redirect(request, "dead", queue=queue, done="retried_all", n=count)

    async def _mutate(
        self, request: Request, change: Any, name: str, **query: Any
    ) -> Response:
        try:
            await change
        except NotImplementedError as exc:
            return self._message(request, 501, f"Not available yet: {exc}.")
        except StoreError:
            raise
        except StackshiftError as exc:  # not dead, unknown run, malformed id...
            return self._message(request, 409, str(exc))
        return self._redirect(request, name, **query)


def create_app(
    app: Stackshift,
    *,
    auth: AuthHook | None = None,
    title: str = "stackshift",
    queues: Sequence[str] | None = None,
    secret: str | bytes | None = None,
    refresh_seconds: float = 3.0,
    data: DashboardData | None = None,
) -> Starlette:
    """The dashboard of ``app``, as an ASGI app to serve or mount.

    Args:
        app: the stackshift app whose queues and runs are shown.
        auth: called with each request (pages, forms, static files) before
            anything else; return True to let it through, False to refuse it
            (403), or raise ``starlette.exceptions.HTTPException`` to answer
            otherwise (e.g. 401 with ``WWW-Authenticate``). May be async. None:
            no check (the CLI binds 127.0.0.1 by default).
        title: shown in the header and the browser tab.
        queues: the queues to show (until stackshift keeps a registry of queues).
        secret: key that signs CSRF tokens; give the same one to every process
            behind one address. Default: random per process.
        refresh_seconds: how often open pages refresh their live parts.
        data: the data layer (default: ``DashboardData(app, queues=queues)``).

    Returns:
        A Starlette app: ``api.mount("/jobs", create_app(app))``.
    """
    dashboard = Dashboard(
        data or DashboardData(app, queues=queues),
        title=title,
        refresh_seconds=refresh_seconds,
    )
    tokens = CsrfTokens(secret)
    starlette = Starlette(
        routes=dashboard.routes(),
        middleware=[
            Middleware(GuardMiddleware, auth=auth, refuse=dashboard.refuse_bare),
            Middleware(CsrfMiddleware, tokens=tokens, refuse=dashboard.refuse),
        ],
        exception_handlers={
            HTTPException: dashboard.http_error,
            StoreError: dashboard.store_error,
        },
    )
    dashboard.app = starlette
    return starlette
