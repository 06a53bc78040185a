"""Store calls as the tests use them: one finish per kind, read-and-start."""

from __future__ import annotations

from stackshift.store import (
    Complete,
    DeadLetter,
    Entry,
    Lease,
    Release,
    Retry,
    StartResult,
    Store,
)


async def complete(store: Store, lease: Lease, result: bytes) -> bool:
    return (await store.finish(lease, Complete(result))).outcome == "ok"


async def fail(
    store: Store, lease: Lease, error: bytes, *, retry: bool, backoff_ms: int = 0
) -> str:
    """'retry', 'dead' or 'lost', as the runner would see it."""
    how = Retry(error, backoff_ms) if retry else DeadLetter(error)
    done = await store.finish(lease, how)
    if done.outcome == "lost":
        return "lost"
    return "retry" if retry else "dead"


async def release(store: Store, lease: Lease) -> bool:
    return (await store.finish(lease, Release())).outcome == "ok"


async def read_and_start(
    store: Store, queue: str, consumer: str, count: int
) -> list[tuple[Entry, StartResult]]:
    entries = await store.read(queue, consumer, count, 1)
    return list(zip(entries, await store.start_many(entries, consumer), strict=True))
