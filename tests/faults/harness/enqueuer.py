"""An enqueuing process: ``python -m tests.faults.harness.enqueuer ...``.

Enqueues ``--count`` runs of ``multistep``, each under its own idempotency key
(``<tag>-<i>``; or all under ``--same-key``), retrying a failed enqueue with the
same key until it is acknowledged. Every acknowledged enqueue is appended to
``--acked`` as ``key<TAB>run_id<TAB>deduplicated`` (O_APPEND, one write per
line), so the checker knows exactly what was promised to the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from stackshift import Stackshift
from stackshift.errors import StoreError


async def enqueue_one(
    app: Stackshift,
    args: argparse.Namespace,
    key: str,
    payload: dict[str, object],
    fd: int,
) -> None:
    queue = app.queue(args.queue)
    delay = 0.05
    while True:
        try:
            handle = await queue.enqueue(args.job, payload, idempotency_key=key)
        except StoreError as exc:
            print(f"enqueue_failed {key}: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(delay)  # backoff, not synchronisation
            delay = min(1.0, delay * 2)
            continue
        line = f"{key}\t{handle.run_id}\t{int(handle.deduplicated)}\n"
        os.write(fd, line.encode())
        return


async def main(args: argparse.Namespace) -> None:
    payload = json.loads(args.payload)
    fd = os.open(args.acked, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async with Stackshift() as app:
        keys = [args.same_key or f"{args.tag}-{i}" for i in range(args.count)]
        sem = asyncio.Semaphore(args.concurrency)

        async def bounded(i: int, key: str) -> None:
            async with sem:
                await enqueue_one(app, args, key, dict(payload, idx=i), fd)
                if args.pace_ms:
                    await asyncio.sleep(args.pace_ms / 1000)

        await asyncio.gather(*(bounded(i, k) for i, k in enumerate(keys)))
    os.close(fd)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--queue", default="faults")
    p.add_argument("--job", default="multistep")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--tag", default=f"k{os.getpid()}")
    p.add_argument("--same-key", default="")
    p.add_argument("--acked", required=True)
    p.add_argument("--payload", default="{}")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--pace-ms", type=float, default=0.0)
    p.add_argument("--start-file", default="")
    return p.parse_args(argv)


def wait_barrier(path: str) -> None:
    """A barrier shared by several processes: all start when the file appears."""
    while path and not Path(path).exists():
        time.sleep(0.002)  # sync-ok: poll interval of the start barrier


if __name__ == "__main__":
    arguments = parse()
    wait_barrier(arguments.start_file)
    started = time.monotonic()
    asyncio.run(main(arguments))
    print(f"enqueuer done in {time.monotonic() - started:.2f}s", file=sys.stderr)
