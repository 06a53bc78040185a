"""Dashboard fixtures: the ASGI app over HTTP (httpx), the app served by uvicorn
in a thread, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from stackshift import Stackshift
from stackshift.dashboard import create_app

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# Headless, and nothing that reaches for the network or a GPU on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUEUES = ["dash", "other"]


@pytest.fixture
async def web(app: Stackshift) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the dashboard's ASGI app (the test's app and prefix)."""
    transport = httpx.ASGITransport(app=create_app(app, queues=QUEUES))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        yield c


async def csrf_token(client: httpx.AsyncClient, path: str = "/") -> str:
    """The token a page's forms carry (and the client now holds the cookie)."""
    page = await client.get(path)
    marker = 'name="csrf_token" value="'
    start = page.text.find(marker)
    if start < 0:  # a page without a form: the cookie is the token
        token = client.cookies.get("stackshift_csrf")
        assert token, "no CSRF cookie was set"
        return token
    start += len(marker)
    return page.text[start : page.text.index('"', start)]


class ServedDashboard:
    """``create_app`` served by uvicorn in a thread of its own, with its own
    ``Stackshift`` on the test's Redis and prefix (its own event loop)."""

    def __init__(
        self, redis_url: str, prefix: str, *, mount: str = "", **options: Any
    ) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}{mount}"
        self._server: uvicorn.Server | None = None
        self._failed: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main,
            args=(redis_url, prefix, mount, options),
            name="dashboard",
            daemon=True,
        )

    def _main(self, redis_url: str, prefix: str, mount: str, options: Any) -> None:
        async def serve() -> None:
            async with Stackshift(redis_url, prefix=prefix) as app:
                asgi: Any = create_app(app, **options)
                if mount:  # as a user mounts it inside their own app
                    asgi = Starlette(routes=[Mount(mount, app=asgi)])
                config = uvicorn.Config(asgi, log_level="warning", lifespan="off")
                self._server = uvicorn.Server(config)
                await self._server.serve(sockets=[self._sock])

        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by start()/stop()
            self._failed = exc

    def start(self, within: float = 15.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + within
        while not (self._server is not None and self._server.started):
            if self._failed is not None or not self._thread.is_alive():
                raise AssertionError(f"the dashboard did not start: {self._failed!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start within {within} s")
            time.sleep(0.02)  # sync-ok: poll interval of a deadline-bounded wait

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(15)
        self._sock.close()
        assert not self._thread.is_alive(), "the dashboard did not stop"


@pytest.fixture
def serve_dashboard(redis_url: str, prefix: str) -> Iterator[Any]:
    """``serve_dashboard(**create_app_options)`` -> base URL; stopped at teardown."""
    started: list[ServedDashboard] = []

    def serve(**options: Any) -> str:
        options.setdefault("queues", QUEUES)
        options.setdefault("refresh_seconds", 0.5)
        served = ServedDashboard(redis_url, prefix, **options)
        started.append(served)
        served.start()
        return served.url

    yield serve
    for served in started:
        served.stop()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium: installed by .ci/ensure-chromium.sh when missing; the
    browser tests skip, saying why, only when it cannot be installed."""
    pytest.importorskip("playwright", reason="playwright is not installed (dev group)")
    if not Path(CHROMIUM).exists() and shutil.which("apt-get"):
        subprocess.run(
            ["bash", str(ROOT / ".ci" / "ensure-chromium.sh")], check=False, timeout=600
        )
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"Debian's chromium is not at {CHROMIUM} and could not be installed "
            "(.ci/ensure-chromium.sh, run by `make test`)"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


class PageProblems:
    """Script errors and console errors (CSP refusals among them) of a page."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def watch(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.items.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.items.append(f"console: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page in a fresh browser context (its own cookies)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield await context.new_page()
    finally:
        await context.close()


@pytest.fixture
def problems(page: Any) -> PageProblems:
    """Script and console errors of ``page`` (a CSP refusal is one)."""
    watcher = PageProblems()
    watcher.watch(page)
    return watcher
