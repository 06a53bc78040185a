"""Enqueue one job many times at once with one idempotency key, from a process
of its own: ``python -m tests.apps.enqueue_burst QUEUE KEY COUNT GO_FILE``.

Waits until GO_FILE exists (so that several processes start together), then
prints one JSON line per enqueue: {"run_id": ..., "deduplicated": ...}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from stackshift import Stackshift

GO_POLL_SECONDS = 0.002


def wait_for_file(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(GO_POLL_SECONDS)


async def burst(queue: str, key: str, count: int) -> None:
    async with Stackshift() as app:
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
    wait_for_file(go_file)
    asyncio.run(burst(queue_name, idem_key, int(how_many)))
