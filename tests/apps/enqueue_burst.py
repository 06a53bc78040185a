"""Enqueue one job many times at once with one idempotency key, from a process
of its own: ``python -m tests.apps.enqueue_burst QUEUE KEY COUNT GO_FILE``.

Connects, prints {"ready": true}, waits until GO_FILE exists (so that several
processes start together), then prints one JSON line per enqueue:
{"run_id": ..., "deduplicated": ...} (among stackshift's own log lines).
"""

from __future__ import annotations

import asyncio
import json
import sys

import anyio

from stackshift import Stackshift

GO_POLL_SECONDS = 0.002


async def burst(queue: str, key: str, count: int, go: str) -> None:
    async with Stackshift() as app:
        await app.store.ping()
        print(json.dumps({"ready": True}), flush=True)
        # The test creates it from another process: there is no event to wait on.
        while not await anyio.Path(go).exists():  # noqa: ASYNC110
            await anyio.sleep(GO_POLL_SECONDS)
        handles = await asyncio.gather(
            *(
                app.queue(queue).enqueue("echo", {"n": i}, idempotency_key=key)
                for i in range(count)
            )
        )
    for handle in handles:
        print(
            json.dumps({"run_id": handle.run_id, "deduplicated": handle.deduplicated})
        )


if __name__ == "__main__":
    queue_name, idem_key, how_many, go_file = sys.argv[1:5]
    asyncio.run(burst(queue_name, idem_key, int(how_many), go_file))
