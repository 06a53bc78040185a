"""Profile one worker process draining a backlog (W2's drain), with py-spy.

    .venv/bin/python -m bench.profile stackshift --n 20000 --concurrency 100 \\
        --py-spy /tmp/profvenv/bin/py-spy

A private redis-server; N no-op runs enqueued in bulk; one worker process
started as the bench starts it, py-spy attached to it (``record --pid``,
``--format raw``: collapsed stacks, idle samples left out) until the N-th job
ends. Prints the drain's rate, the worker's and Redis' CPU per run and how busy
each was (CPU seconds per wall second over the drain, from the first job's start
to the last one's end) and how long each waited for a CPU while runnable (per
wall second: the machine's other load), then where the worker's samples went: by area (the
first rule that matches a stack, below) and by leaf function (self time).

py-spy pauses the worker for each sample unless given ``--spy-args=--nonblocking``,
and paused samples pile up on system calls: with ``--native``, up to a quarter
of them land on ``getpid()``, which ``perf stat -e 'syscalls:sys_enter_*'`` counts
at 6.9 calls and well under 1 µs per run. Read the areas from a
``--nonblocking`` profile (a share of its stacks come out torn, without their
outer frames).

``$BENCH_LOOP=uvloop`` runs the raw loops on uvloop (stackshift picks uvloop
itself when it is installed; the raw loops use ``asyncio.run``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench.server import BenchRedis
from bench.systems.raw import RawJobsAdapter
from bench.systems.stackshift_system import StackshiftAdapter
from bench.workloads import common, driver

# (area, substrings of a frame, any of which puts a stack there), first match wins.
# The first three are native frames (``--spy-args=--native``): the cyclic
# garbage collector, and two system calls, wherever they happen.
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("start-up (imports)", ("_find_and_load", "_call_with_frames_removed")),
    ("garbage collector (gc_collect_main)", ("gc_collect_main",)),
    ("getpid() (get_running_loop on Python 3.11)", ("getpid (libc",)),
    ("the job's own round trip (redis-py)", ("workloads/common.py",)),
    ("fetch and start (lane, dispatch, intake)", (
        "worker/lane.py", "worker/dispatch.py", "store/intake.py",
    )),
    ("finish (store/finish.py, batching)", ("store/finish.py", "store/batching.py")),
    ("per-run machinery (runner, lease, context, slots, logs)", (
        "worker/runner.py", "worker/lease.py", "stackshift/context.py",
        "stackshift/step.py", "worker/slots.py", "stackshift/logs.py", "structlog",
    )),
    ("other stackshift", ("stackshift/",)),
    ("raw loop (XREADGROUP, XACK)", ("systems/raw.py",)),
    ("event loop", ("uvloop", "asyncio/", "selectors.py")),
]  # fmt: skip


def area_of(frames: list[str]) -> str:
    for area, needles in AREAS:
        if any(needle in frame for frame in frames for needle in needles):
            return area
    return "other"


def read_stacks(path: Path) -> collections.Counter[tuple[str, ...]]:
    """py-spy's raw format: ``frame;frame;... count`` per line, root first."""
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def summarise(stacks: collections.Counter[tuple[str, ...]], top: int) -> str:
    areas: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for frames, count in stacks.items():
        area = area_of(list(frames))
        areas[area] += count
        if area != "start-up (imports)":
            leaves[frames[-1]] += count
    total = sum(n for a, n in areas.items() if a != "start-up (imports)") or 1
    lines = [f"samples (start-up left out): {total}"]
    lines += [
        f"  {n / total:6.1%}  {area}"
        for area, n in areas.most_common()
        if area != "start-up (imports)"
    ]
    lines.append("leaf functions (self time):")
    lines += [f"  {n / total:6.1%}  {leaf}" for leaf, n in leaves.most_common(top)]
    return "\n".join(lines)


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds a process (all its threads) has run on a CPU, and has waited
    for one while runnable (the other engineers' load on a shared machine)."""
    ran = waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        ran += int(fields[0])
        waited += int(fields[1])
    return ran / 1e9, waited / 1e9


async def drain(
    args: argparse.Namespace, server: BenchRedis, adapter: driver.Adapter
) -> dict[str, float]:
    r = aioredis.Redis.from_url(server.url)
    await adapter.open()
    await adapter.enqueue_many(args.n)
    await adapter.close()
    await driver.set_target(r, args.n)
    redis_pid = int((await r.info("server"))["process_id"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with driver.Workers(adapter, args.concurrency) as workers:
        pid = workers.procs[0].pid
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(  # noqa: ASYNC220 (a bench tool: starts at once)
                [args.py_spy, "record", "--pid", str(pid), "--rate", str(args.rate),
                 "--format", "raw", "--output", str(out), *args.spy_args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        # CPU is read at the first job's start (polled) and the last one's end.
        while not await r.exists(common.FIRST):
            workers.check_alive()
            await asyncio.sleep(0.001)
        began = (time.monotonic(), schedstat(pid), schedstat(redis_pid))
        end = await driver.wait_end(r, workers, 600)
        ended = (time.monotonic(), schedstat(pid), schedstat(redis_pid))
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(30)
    first = float(await r.get(common.FIRST))
    await r.aclose()
    wall = ended[0] - began[0]
    figures = {"jobs_per_s": (args.n - 1) / max(end - first, 1e-9)}
    for i, who in ((1, "worker"), (2, "redis")):
        ran = ended[i][0] - began[i][0]
        figures[f"{who}_cpu_us_per_run"] = ran / args.n * 1e6
        figures[f"{who}_busy"] = ran / wall  # CPU seconds per wall second
        figures[f"{who}_waiting"] = (ended[i][1] - began[i][1]) / wall  # for a CPU
    figures["load_avg_1m"] = os.getloadavg()[0]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__
    )
    parser.add_argument("system", choices=["stackshift", "raw-jobs"])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument(
        "--py-spy", default="py-spy", help="the py-spy binary ('': no profile)"
    )
    parser.add_argument("--out", default="bench/profiles/drain.txt")
    parser.add_argument(
        "--spy-args", nargs="*", default=[], help="more py-spy options, e.g. --native"
    )
    parser.add_argument("--top", type=int, default=25, help="leaf functions shown")
    args = parser.parse_args()
    adapter: driver.Adapter = (
        StackshiftAdapter() if args.system == "stackshift" else RawJobsAdapter()
    )
    print(run(args, adapter))
    return 0


def run(args: argparse.Namespace, adapter: driver.Adapter) -> str:
    """One profiled drain on a private server; the figures and the summary."""
    with BenchRedis() as server:
        os.environ[common.URL_ENV] = server.url
        os.environ["PYTHONPATH"] = str(driver.REPO)
        figures = asyncio.run(drain(args, server, adapter))
    said = f"{args.system} c={args.concurrency} n={args.n}: " + ", ".join(
        f"{k} {v:,.2f}" for k, v in figures.items()
    )
    if args.py_spy:
        said += "\n" + summarise(read_stacks(Path(args.out)), args.top)
    return said


if __name__ == "__main__":
    raise SystemExit(main())
