"""Shared fixtures: a real Redis, an app with its own key prefix, workers in-process."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from stackshift import Stackshift
from stackshift.store.memory import reset_memory
from tests.support.redis_server import RedisServer, redis_server_factory  # noqa: F401

REDIS_URL = os.environ.get("STACKSHIFT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared test Redis (make test starts one when none answers)."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:  # pragma: no cover
        pytest.fail(
            f"no Redis at {REDIS_URL} ({exc}); run `make test`, which starts one"
        )
    return REDIS_URL


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    value = f"t{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def app(redis_url: str, prefix: str) -> AsyncIterator[Stackshift]:
    """An app on the real Redis, under this test's own prefix."""
    async with Stackshift(redis_url, prefix=prefix) as application:
        yield application


@pytest.fixture(params=["redis", "memory"])
async def any_app(
    request: pytest.FixtureRequest, app: Stackshift
) -> AsyncIterator[Stackshift]:
    """The same engine on a real Redis and on memory:// (fakeredis)."""
    if request.param == "redis":
        yield app
        return
    reset_memory("any-app")
    async with Stackshift("memory://any-app") as memory_app:
        yield memory_app
