"""Fixtures of the fault-injection suite: private redis-servers, the scenario's
processes and ledger, a fault proxy, and the chaos seed (printed on failure)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import RedisServer

from .harness.chaos import Chaos, seed_from_env
from .harness.ledger import ENV as LEDGER_ENV
from .harness.ledger import Ledger
from .harness.procs import Processes
from .harness.proxy import FaultProxy

DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    chaos = getattr(item, "_fault_chaos", None)
    if chaos is not None and report.failed:
        report.sections.append(("chaos seed", chaos.replay_hint()))


@pytest.fixture
def chaos(request: pytest.FixtureRequest) -> Chaos:
    """The scenario's seeded RNG; its seed is reported if the test fails."""
    rng = Chaos(seed_from_env())
    request.node._fault_chaos = rng
    print(rng.replay_hint())
    return rng


@pytest.fixture
def durable_redis(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A private redis-server with AOF and appendfsync always."""
    return redis_server_factory(*DURABLE)


@pytest.fixture
def fault_prefix() -> str:
    return f"f{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.tsv")


@pytest.fixture
def procs_factory(
    tmp_path: Path, fault_prefix: str, ledger: Ledger
) -> Iterator[Callable[[str], Processes]]:
    """``make(redis_url)``: a process set whose workers and enqueuers use that
    Redis, this scenario's prefix and ledger. All are killed in teardown."""
    made: list[Processes] = []

    def make(url: str, **env: str) -> Processes:
        procs = Processes(
            tmp_path,
            {
                "STACKSHIFT_REDIS_URL": url,
                "STACKSHIFT_PREFIX": fault_prefix,
                LEDGER_ENV: str(ledger.path),
                **env,
            },
        )
        made.append(procs)
        return procs

    yield make
    for procs in made:
        procs.close()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[int], FaultProxy]]:
    made: list[FaultProxy] = []

    def make(upstream_port: int) -> FaultProxy:
        proxy = FaultProxy(upstream_port).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
