"""The dashboard over plain HTTP (httpx against the ASGI app, the real Redis):
auth, CSRF, escaping, headers, mounting, and pages whose data is not there yet."""

from __future__ import annotations

import re
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount

from stackshift import JobContext, Stackshift
from stackshift.dashboard import create_app
from tests.dashboard.conftest import QUEUES, csrf_token
from tests.dashboard.jobs import Upstream, register_jobs
from tests.support.processes import wait_status
from tests.support.workers import running_worker

PAGES = ["/", "/runs", "/dead", "/dead/retry-all", "/counters", "/events", "/crons"]
SCRIPT = "<script>alert('pwned')</script>"


def client(asgi: Any, base: str = "http://dash") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url=base)


async def dead_run(app: Stackshift, message: str = "nope") -> str:
    register_jobs(app, Upstream())
    async with running_worker(app, ["dash"]):
        handle = await app.queue("dash").enqueue("refuse", {"message": message})
        await wait_status(app, handle.run_id, "failed", within=15)
    return handle.run_id


async def test_auth_false_refuses_every_page_static_file_and_post(
    app: Stackshift,
) -> None:
    run_id = await dead_run(app)
    asked: list[str] = []

    def deny(request: Request) -> bool:
        asked.append(request.url.path)
        return False

    async with client(create_app(app, queues=QUEUES, auth=deny)) as web:
        for path in [*PAGES, f"/runs/{run_id}", "/static/live.js", "/nowhere"]:
            answer = await web.get(path)
            assert answer.status_code == 403, path
            assert "Not allowed" in answer.text and run_id not in answer.text
        refused = await web.post(f"/runs/{run_id}/retry", data={"csrf_token": "x"})
        assert refused.status_code == 403
    assert len(asked) == len(PAGES) + 4
    run = await app.get_run(run_id)
    assert run is not None and run.status == "failed"


async def test_an_async_auth_hook_lets_chosen_requests_through(app: Stackshift) -> None:
    async def by_header(request: Request) -> bool:
        return request.headers.get("x-user") == "ada"

    async with client(create_app(app, queues=QUEUES, auth=by_header)) as web:
        assert (await web.get("/")).status_code == 403
        allowed = await web.get("/", headers={"x-user": "ada"})
        assert allowed.status_code == 200 and "dash" in allowed.text


async def test_an_auth_hook_can_ask_for_credentials_with_401(app: Stackshift) -> None:
    def basic(request: Request) -> bool:
        if "authorization" not in request.headers:
            raise HTTPException(
                401, "sign in", {"WWW-Authenticate": 'Basic realm="jobs"'}
            )
        return True

    async with client(create_app(app, queues=QUEUES, auth=basic)) as web:
        asked = await web.get("/")
        assert asked.status_code == 401
        assert asked.headers["www-authenticate"] == 'Basic realm="jobs"'
        assert (await web.get("/", auth=("ada", "pw"))).status_code == 200


async def test_a_post_needs_the_token_of_its_own_cookie(app: Stackshift) -> None:
    run_id = await dead_run(app)
    retry = f"/runs/{run_id}/retry"
    async with client(create_app(app, queues=QUEUES)) as web:
        assert (await web.post(retry)).status_code == 403  # no cookie, no token
        token = await csrf_token(web, f"/runs/{run_id}")
        for form in ({}, {"csrf_token": ""}, {"csrf_token": token + "x"}):
            answer = await web.post(retry, data=form)
            assert answer.status_code == 403, form
            assert "nothing was changed" in answer.text
        as_json = await web.post(retry, json={"csrf_token": token})
        assert as_json.status_code == 403
    # A token signed by another dashboard's key (another process, no shared secret).
    async with client(create_app(app, queues=QUEUES)) as other:
        forged = await csrf_token(other, "/")
    async with client(create_app(app, queues=QUEUES)) as web:
        planted = {"cookie": f"stackshift_csrf={forged}"}
        answer = await web.post(retry, data={"csrf_token": forged}, headers=planted)
        assert answer.status_code == 403
    run = await app.get_run(run_id)
    assert run is not None and run.status == "failed"

    async with client(create_app(app, queues=QUEUES)) as web:
        token = await csrf_token(web, f"/runs/{run_id}")
        done = await web.post(retry, data={"csrf_token": token})
        assert done.status_code == 303
        assert done.headers["location"] == f"/runs/{run_id}?done=retried"
    run = await app.get_run(run_id)
    assert run is not None and run.status == "queued"


async def test_a_shared_secret_lets_tokens_cross_processes(app: Stackshift) -> None:
    run_id = await dead_run(app)
    async with client(create_app(app, queues=QUEUES, secret="s3cret")) as one:
        token = await csrf_token(one, "/")
    async with client(create_app(app, queues=QUEUES, secret="s3cret")) as two:
        answer = await two.post(
            f"/runs/{run_id}/retry",
            data={"csrf_token": token},
            headers={"cookie": f"stackshift_csrf={token}"},
        )
        assert answer.status_code == 303


async def test_the_csrf_cookie_is_http_only_strict_and_scoped(app: Stackshift) -> None:
    async with client(create_app(app, queues=QUEUES)) as web:
        cookie = (await web.get("/")).headers["set-cookie"]
        assert (await web.get("/")).headers.get("set-cookie") is None  # kept
    assert cookie.startswith("stackshift_csrf=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    async with client(create_app(app, queues=QUEUES), "https://dash") as web:
        assert "Secure" in (await web.get("/")).headers["set-cookie"]


async def test_values_from_redis_are_escaped(
    web: httpx.AsyncClient, app: Stackshift
) -> None:
    run_id = await dead_run(app, message=SCRIPT)
    for path in [f"/runs/{run_id}", "/dead?queue=dash"]:
        page = await web.get(path)
        assert page.status_code == 200
        assert SCRIPT not in page.text
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page.text
    found = await web.get("/runs", params={"by": "correlation_id", "find": SCRIPT})
    assert SCRIPT not in found.text and "&lt;script&gt;" in found.text


async def test_pages_carry_a_strict_policy_and_no_inline_script_or_style(
    web: httpx.AsyncClient, app: Stackshift
) -> None:
    run_id = await dead_run(app)
    for path in [*PAGES, f"/runs/{run_id}", f"/runs/{run_id}?partial=1", "/runs/x"]:
        page = await web.get(path)
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        for tag in re.findall(r"<script[^>]*>", page.text):
            assert " src=" in tag, f"inline script on {path}: {tag}"
        assert not re.search(r"\son[a-z]+=", page.text), path
        assert " style=" not in page.text and "<style" not in page.text, path
    script = await web.get("/static/live.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith(
        ("text/javascript", "application/javascript")
    )


async def test_mounted_in_another_app_every_url_keeps_the_mount_path(
    app: Stackshift,
) -> None:
    run_id = await dead_run(app)
    outer = Starlette(routes=[Mount("/ops/jobs", app=create_app(app, queues=QUEUES))])
    async with client(outer) as web:
        first = await web.get("/ops/jobs/")
        assert "Path=/ops/jobs;" in first.headers["set-cookie"]
        for path in ["/", f"/runs/{run_id}", "/dead?queue=dash"]:
            page = await web.get("/ops/jobs" + path)
            assert page.status_code == 200, path
            urls = re.findall(r'(?:href|action|src)="([^"]*)"', page.text)
            assert urls and all(u.startswith(("/ops/jobs/", "?")) for u in urls), urls
        token = await csrf_token(web, f"/ops/jobs/runs/{run_id}")
        done = await web.post(
            f"/ops/jobs/runs/{run_id}/retry", data={"csrf_token": token}
        )
        assert done.headers["location"] == f"/ops/jobs/runs/{run_id}?done=retried"


async def test_unknown_or_malformed_runs_and_names_are_refused_clearly(
    web: httpx.AsyncClient,
) -> None:
    missing = await web.get("/runs/" + "0" * 26 + ".dash")
    assert missing.status_code == 404 and "No run" in missing.text
    assert (await web.get("/runs/not-a-run-id")).status_code == 404
    bad_queue = await web.get("/dead", params={"queue": "no such queue"})
    assert bad_queue.status_code == 400 and "invalid queue name" in bad_queue.text
    # A valid name the dashboard does not show is refused too (no stream is made).
    assert (await web.get("/dead", params={"queue": "elsewhere"})).status_code == 400
    bad_status = await web.get("/runs", params={"status": "exploded"})
    assert bad_status.status_code == 400
    bad_job = await web.get("/runs", params={"job": "a b"})
    assert bad_job.status_code == 400
    wrong_run = await web.post(
        "/runs/" + "0" * 26 + ".dash/retry",
        data={"csrf_token": await csrf_token(web)},
    )
    assert wrong_run.status_code == 409 and "does not exist" in wrong_run.text


async def test_a_retry_of_a_run_that_is_not_dead_says_why(
    web: httpx.AsyncClient, app: Stackshift
) -> None:
    register_jobs(app, Upstream())
    async with running_worker(app, ["dash"]):
        handle = await app.queue("dash").enqueue("steps", {"name": "n"})
        await handle.result(timeout=10)
    token = await csrf_token(web)
    answer = await web.post(f"/runs/{handle.run_id}/retry", data={"csrf_token": token})
    assert answer.status_code == 409 and "is completed, not failed" in answer.text


async def test_every_page_shows_its_data(
    web: httpx.AsyncClient, app: Stackshift
) -> None:
    """The listing, the finders, a run's attempts and counters, events and
    crons come from the store: no page says "not available"."""

    @app.job("count_up")
    async def count_up(ctx: JobContext[Any]) -> int:
        return await ctx.state.increment("dash:seen", 2)

    @app.cron("dash-nightly", "0 3 * * *", queue="dash")
    async def nightly(ctx: JobContext[Any]) -> None:
        pass

    run_id = await dead_run(app)
    keyed = await app.queue("dash").enqueue(
        "count_up", {}, idempotency_key="dash-key", correlation_id="dash-corr"
    )
    async with running_worker(app, ["dash"]):
        await keyed.result(timeout=10)
        await app.send_event("dash.happened", {"n": 1}, id="evt-dash")
        await wait_status(app, run_id, "failed", within=5)
    expectations = {
        "/": "dash",
        "/runs?queue=dash": run_id,
        "/runs?by=idempotency_key&find=dash-key&queue=dash": keyed.run_id,
        "/runs?by=correlation_id&find=dash-corr": keyed.run_id,
        f"/runs/{keyed.run_id}": "dash:seen",
        "/counters": "dash:seen",
        "/events": "evt-dash",
        "/crons": "dash-nightly",
    }
    for path, text in expectations.items():
        page = await web.get(path)
        assert page.status_code == 200, path
        assert "Not available yet" not in page.text, path
        assert text in page.text, path


async def test_a_live_part_is_the_fragment_alone(web: httpx.AsyncClient) -> None:
    whole = await web.get("/")
    part = await web.get("/?partial=1")
    assert (
        whole.text.startswith("<!doctype html>")
        and 'data-live="?partial=1"' in whole.text
    )
    assert "<html" not in part.text and 'data-queue="dash"' in part.text


async def test_counters_are_read_by_key(
    web: httpx.AsyncClient, app: Stackshift
) -> None:
    @app.job("count")
    async def count(ctx: Any) -> None:
        await ctx.state.increment("files:f_1:rows", 7)

    async with running_worker(app, ["dash"]):
        await (await app.queue("dash").enqueue("count", {})).result(timeout=10)
    page = await web.get("/counters", params={"key": "files:f_1:rows"})
    assert re.search(r"data-counter>\s*7\s*<", page.text)
    too_long = await web.get("/counters", params={"key": "k" * 1025})
    assert "too long" in too_long.text and "data-counter" not in too_long.text
