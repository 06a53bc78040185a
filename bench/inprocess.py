"""The engine alone, in one process: awaited enqueues, and drains of no-op runs
by an in-process worker, for the stackshift of a given source tree.

``python -m bench`` runs each system's own harness from its tree, so comparing
two commits there also compares their benches. This one harness imports the
engine from ``--tree`` (default: this checkout), so two trees are measured the
same way; run it for each, alternating, on a quiet machine:

    git worktree add /tmp/base <commit>
    for t in /tmp/base . /tmp/base .; do .venv/bin/python -m bench.inprocess --tree $t; done

Figures: runs (or enqueues) per second, one per repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any


async def main(args: argparse.Namespace) -> None:
    import anyio
    import structlog

    from stackshift import Stackshift

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    app = Stackshift(args.url, prefix=f"bench-inproc-{uuid.uuid4().hex[:8]}:")

    left = [0]
    drained = asyncio.Event()

    @app.job("noop")
    async def noop(ctx: Any) -> None:  # a name main() imports would not resolve
        left[0] -= 1
        if left[0] == 0:
            drained.set()

    queue = app.queue("inproc")
    undrained = app.queue("inproc-enqueues")  # no worker reads it
    try:
        for _ in range(500):  # warm-up: connections, scripts loaded
            await undrained.enqueue("noop", {"t": 0.0})
        enqueues = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            for _ in range(args.n):
                await undrained.enqueue("noop", {"t": 0.0})
            enqueues.append(round(args.n / (time.perf_counter() - began)))
        drains: dict[int, list[int]] = {}
        for concurrency in (10, 100):
            drains[concurrency] = []
            for _ in range(args.repeat):
                await queue.enqueue_many("noop", [{"t": 0.0}] * args.n)
                left[0] = args.n
                drained.clear()
                worker = app.worker(["inproc"], concurrency=concurrency)
                began = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.run)
                    await drained.wait()  # the last handler ran
                    worker.stop()
                drains[concurrency].append(
                    round(args.n / (time.perf_counter() - began))
                )
        print(f"{args.tree}: enqueue/s {enqueues}  drain c=10 {drains[10]}  "
              f"c=100 {drains[100]}")  # fmt: skip
    finally:
        client = app.store.client
        keys = [k async for k in client.scan_iter(match=app.settings.prefix + "*")]
        for start in range(0, len(keys), 500):
            await client.unlink(*keys[start : start + 500])
        await app.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=".", help="the source tree to import")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    sys.path.insert(0, str(Path(arguments.tree).resolve()))  # its stackshift
    asyncio.run(main(arguments))
