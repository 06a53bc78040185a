"""What Prometheus metrics cost a worker: its CPU time per run, metrics on and off.

W2's throughput (``python -m bench --only W2 --systems stackshift,stackshift-metrics``)
drifts by ±15 % from cell to cell on a small machine shared with others: more
than the effect it looks for, even with cells interleaved. This compares the
two within one worker instead: an in-process worker (uvloop, concurrency 10,
W2's no-op job) drains a backlog while its metrics observer is switched on and
off every ``--slice`` seconds; CPU time (``time.process_time``) and finished runs
are summed per mode. Any drift in the machine's load hits both modes alike.

    .venv/bin/python -m bench.metrics_cost [--n 60000] [--slice 0.2] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from typing import Any

import anyio
import structlog

from bench.server import BenchRedis
from bench.workloads import common, driver
from stackshift import JobContext, Stackshift


async def measure(url: str, n: int, slice_s: float, concurrency: int) -> None:
    app = Stackshift(url, prefix="ssb-cost:")
    done = [0]

    @app.job("noop")
    async def noop(ctx: JobContext[Any]) -> None:
        await common.do_work(0.0)  # W2's job: one pipelined round trip
        done[0] += 1

    queue = app.queue(driver.QUEUE)
    for start in range(0, n, 1000):
        await queue.enqueue_many("noop", [{"t": 0.0}] * min(1000, n - start))
    worker = app.worker(
        [driver.QUEUE],
        concurrency=concurrency,
        burst=True,
        metrics_port=0,
        metrics_host="127.0.0.1",
    )
    cpu = {"off": 0.0, "on": 0.0}
    runs = {"off": 0, "on": 0}
    # (cpu, runs) of each slice, by mode: pairs of neighbouring slices compare
    # the two modes under (nearly) the same load of the machine.
    slices: dict[str, list[tuple[float, int]]] = {"off": [], "on": []}

    async def alternate() -> None:
        await anyio.sleep(0.5)  # past start-up
        runner: Any = worker._runner
        metrics = runner.observer
        mode = "off"
        while True:
            runner.observer = None if mode == "off" else metrics
            began, before = time.process_time(), done[0]
            await anyio.sleep(slice_s)
            spent, finished = time.process_time() - began, done[0] - before
            cpu[mode] += spent
            runs[mode] += finished
            slices[mode].append((spent, finished))
            mode = "on" if mode == "off" else "off"

    async with anyio.create_task_group() as tg:
        tg.start_soon(alternate)
        await worker.run()
        tg.cancel_scope.cancel()
    await app.close()
    await common.close_client()
    off, on = (cpu[m] / max(runs[m], 1) * 1e6 for m in ("off", "on"))
    ratios = [
        (c_on / r_on) / (c_off / r_off)
        for (c_off, r_off), (c_on, r_on) in zip(
            slices["off"],
            slices["on"],
            strict=False,  # off may have one more
        )
        if r_off and r_on
    ]
    print(
        f"worker CPU per run (concurrency {concurrency}, {runs['off']} runs off, "
        f"{runs['on']} on, {len(ratios)} pairs of {slice_s:g} s slices): "
        f"metrics off {off:.1f} µs, on {on:.1f} µs ({(on / off - 1) * 100:+.1f} %); "
        f"median of the pairs' ratios {statistics.median(ratios):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_cost")
    parser.add_argument("--n", type=int, default=60_000, help="runs to drain")
    parser.add_argument("--slice", type=float, default=0.2, help="seconds per mode")
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        cache_logger_on_first_use=True,
    )
    with BenchRedis() as server:
        os.environ[common.URL_ENV] = server.url  # the jobs' own client
        anyio.run(
            measure,
            server.url,
            args.n,
            args.slice,
            args.concurrency,
            backend_options={"use_uvloop": True},
        )


if __name__ == "__main__":
    main()
