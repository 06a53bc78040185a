"""Group commit: concurrent script calls share pipelines, each keeps its reply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ResponseError

from stackshift import Stackshift


async def test_concurrent_calls_share_round_trips_and_keep_their_replies(
    redis_url: str, prefix: str
) -> None:
    async with Stackshift(redis_url, prefix=prefix) as app:
        sent: list[int] = []  # round trips: one per command or batch of commands
        commands = app.store.commands
        one, many = commands.execute, commands.execute_many

        async def counting_one(*args: Any) -> Any:
            sent.append(1)
            return await one(*args)

        async def counting_many(batch: list[tuple[Any, ...]]) -> list[Any]:
            sent.append(1)
            return await many(batch)

        commands.execute = counting_one  # type: ignore[method-assign]
        commands.execute_many = counting_many  # type: ignore[method-assign]
        handles = await asyncio.gather(
            *(
                app.queue("q").enqueue("job", {"n": i}, idempotency_key=f"k{i % 50}")
                for i in range(200)
            )  # fmt: skip
        )
        # 200 enqueues went out in far fewer round trips than 200...
        assert 1 <= len(sent) < 50
        # ...and each caller got its own reply: 50 runs, 150 deduplicated.
        assert len({h.run_id for h in handles}) == 50
        assert sum(h.deduplicated for h in handles) == 150


async def test_an_error_reply_fails_only_its_own_call(
    redis_url: str, prefix: str
) -> None:
    async with Stackshift(redis_url, prefix=prefix) as app:
        store = app.store
        stream = store.keys.queue("q").stream
        await store.client.set(stream, "not a stream")  # XADD on it will fail

        async def bad() -> None:
            await app.queue("q").enqueue("job", {})

        good = [store.increment(f"c{i}", 1, 1, "r") for i in range(10)]
        results = await asyncio.gather(bad(), *good, return_exceptions=True)
        assert "WRONGTYPE" in str(results[0])
        assert results[1:] == [(True, 1)] * 10
        with pytest.raises(Exception, match="WRONGTYPE"):
            await bad()
        assert not isinstance(results[0], ResponseError)  # mapped to StoreError
