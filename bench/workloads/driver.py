"""Runs one cell (one workload, once) for one system, and prints its JSON.

Each system supplies an ``Adapter``: how it enqueues, how its worker is started,
how a W4 run is awaited. The workloads below are written once against it, so
every system does the same Redis-side work and is measured the same way:

- enqueue workloads (W1, W1b) time the enqueuing loop, then check that exactly
  N runs are queued;
- drain workloads (W2, W5, W6) enqueue first (untimed), then start worker
  processes and time from the first job's start to the N-th job's end, read
  from marks the jobs write (see common.py), then check the counter is exactly N;
- W3 paces enqueues at an idle worker, W4 awaits multi-step runs one by one,
  W7 reads Redis ``used_memory`` and the worker's RSS;
- events and durable time (W8-W11, W4i) are in events.py; W12 (what a run
  costs Redis: commands, bytes, CPU) in cost.py.

Invoked as ``python -m bench.<...>.<system> cell '<json>'`` (prints one JSON
line) or ``... worker <concurrency> [<mode>]`` (a worker process for the cell;
the mode is the workload's name, for systems whose worker differs by workload).
Standard library and redis-py only.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from . import common

REPO = Path(__file__).resolve().parents[2]
QUEUE = "bench"


class CellError(RuntimeError):
    """A cell did not run exactly the jobs it should have."""


class Unsupported(CellError):
    """The system has no such feature (the cell is skipped, not failed)."""


class Adapter(abc.ABC):
    """One system under test, as the workloads see it."""

    name: str = ""
    module: str = ""  # python -m <module> runs this driver for the system
    default_concurrency: int = 10
    has_concurrency: bool = True  # False: the raw loop reads fixed batches

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect (enqueue side)."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections."""

    @abc.abstractmethod
    async def enqueue(self, enqueued_at: float) -> None:
        """Enqueue one no-op job, awaited."""

    @abc.abstractmethod
    async def enqueue_many(self, n: int) -> None:
        """Enqueue ``n`` no-op jobs the fastest way the system offers."""

    @abc.abstractmethod
    async def queued(self) -> int:
        """How many runs wait in the queue."""

    @abc.abstractmethod
    async def chain(self, steps: int) -> None:
        """One W4 run of ``steps`` steps, awaited to its end."""

    @abc.abstractmethod
    async def serve(self, concurrency: int, mode: str = "") -> None:
        """Run a worker in this process until the process is terminated.
        ``mode``: the workload it serves ("" for the plain job loop)."""

    def worker_argv(self, concurrency: int, mode: str = "") -> list[str]:
        argv = [sys.executable, "-m", self.module, "worker", str(concurrency)]
        return [*argv, mode] if mode else argv

    def supervised_argv(self, concurrency: int, procs: int) -> list[str]:
        """One command that runs ``procs`` worker processes under the system's
        own supervisor (W5s), if it has one."""
        raise Unsupported(f"{self.name} has no supervisor of worker processes")

    # --- events and durable time (events.py); the default: not supported -------

    has_direct: bool = False  # W8's one-hop floor (the raw baseline only)
    has_cron: bool = False  # W11: one run per tick across worker processes

    async def add_waiters(self, event: str, keys: list[int | None]) -> None:
        """One run per key waiting for ``event`` (with ``k`` equal to the key;
        None: any event of that name)."""
        raise Unsupported(f"{self.name} has no runs that wait for an event")

    async def suspended(self) -> int:
        """Runs waiting (for an event or a time) that hold no worker."""
        raise Unsupported(f"{self.name} has no suspended runs")

    async def send_event(self, event: str, key: int | None) -> None:
        raise Unsupported(f"{self.name} has no events")

    async def send_direct(self) -> None:
        """W8's floor: one stream entry that a blocked worker reads at once."""
        raise Unsupported(f"{self.name} has no one-hop floor")

    async def enqueue_sleepers(self, seconds: list[float], *, hold: bool) -> None:
        """One run per duration, sleeping that long from its start (peers: a
        job delayed that long from its enqueue), then doing ``do_work`` with
        its due time as ``enqueued_at`` (its lateness). ``hold``: just sleep."""
        raise Unsupported(f"{self.name} has no delayed jobs")

    async def chain_invoke(self, steps: int) -> None:
        """One W4i run: ``steps`` child jobs, one after the other, awaited."""
        raise Unsupported(f"{self.name} has no child runs")

    def versions(self) -> dict[str, str]:
        return {}


# --- worker processes ---------------------------------------------------------


class Workers:
    """Worker processes of one cell, terminated (SIGTERM, then SIGKILL) at exit."""

    def __init__(
        self,
        adapter: Adapter,
        concurrency: int,
        procs: int = 1,
        mode: str = "",
        *,
        supervised: bool = False,
    ) -> None:
        # supervised: one process, the system's supervisor of ``procs`` workers
        if supervised:
            self._argv = adapter.supervised_argv(concurrency, procs)
            procs = 1
        else:
            self._argv = adapter.worker_argv(concurrency, mode)
        self._procs_wanted = procs
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def __enter__(self) -> Workers:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), env.get("PYTHONPATH", "")) if p
        )
        for _ in range(self._procs_wanted):
            log = tempfile.TemporaryFile()
            self._logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    self._argv,
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
        return self

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self._logs, strict=True):
            if proc.poll() not in (None, 0):
                log.seek(0)
                tail = log.read()[-3000:].decode(errors="replace")
                raise CellError(f"worker exited with {proc.returncode}:\n{tail}")

    def _pids(self) -> list[int]:
        """The worker processes, and the children of each (a supervisor's)."""
        pids = []
        for proc in self.procs:
            pids.append(proc.pid)
            with contextlib.suppress(OSError, ValueError):
                children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                pids += [int(pid) for pid in children.read_text().split()]
        return pids

    def rss_kb(self) -> int:
        """Largest resident set of the live worker processes, kB."""
        best = 0
        for pid in self._pids():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]))
        return best

    def cpu_seconds(self) -> float:
        """CPU time the live worker processes (all their threads) have used so
        far: schedstat's nanoseconds on a CPU, not /proc/<pid>/stat's 10 ms
        ticks, which cannot tell an idle second from one with 9 ms of work."""
        total = 0
        for pid in self._pids():
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
                for task in tasks:
                    total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError):
                continue  # exited meanwhile
        return total / 1e9

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()


# --- marks --------------------------------------------------------------------


async def set_target(r: Any, target: int) -> None:
    await r.set(common.TARGET, target)


async def wait_end(r: Any, workers: Workers, seconds: float) -> float:
    """Wall time at which the target count was reached (within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        popped = await r.blpop([common.END], timeout=1)
        if popped:
            return float(popped[1])
        workers.check_alive()
    done = int(await r.get(common.DONE) or 0)
    raise CellError(f"timed out after {seconds:.0f} s with {done} jobs done")


async def check_done(r: Any, expected: int) -> int:
    """Let stragglers land, then insist on exactly ``expected`` jobs run."""
    await asyncio.sleep(0.2)
    done = int(await r.get(common.DONE) or 0)
    if done != expected:
        raise CellError(f"{done} jobs ran, expected exactly {expected}")
    return done


async def wait_count(r: Any, key: str, value: int, workers: Workers) -> None:
    deadline = time.monotonic() + 60
    while int(await r.get(key) or 0) < value:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise CellError(f"{key} did not reach {value} within 60 s")
        await asyncio.sleep(0.01)


async def used_memory(r: Any) -> int:
    info = await r.info("memory")
    return int(info["used_memory"])


def _timeout(n: int) -> float:
    return max(120.0, n / 100)


# --- workloads ----------------------------------------------------------------


async def _timed_enqueue(
    a: Adapter, n: int, enqueue: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    """Time ``enqueue`` (which enqueues ``n`` jobs), then check exactly n are queued."""
    began = time.perf_counter()
    await enqueue()
    elapsed = time.perf_counter() - began
    queued = await a.queued()
    if queued != n:
        raise CellError(f"{queued} runs queued, expected exactly {n}")
    return {"jobs_per_s": n / elapsed, "n": n, "checked": queued}


async def w1(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Enqueue N jobs awaited one at a time."""
    n = int(p["n"])

    async def one_at_a_time() -> None:
        for _ in range(n):
            await a.enqueue(0.0)

    return await _timed_enqueue(a, n, one_at_a_time)


async def w1b(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Enqueue N jobs in bulk."""
    n = int(p["n"])
    return await _timed_enqueue(a, n, lambda: a.enqueue_many(n))


async def drain(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Drain N queued jobs with ``procs`` worker processes (W2, W5)."""
    n = int(p["n"])
    concurrency = int(p.get("concurrency") or a.default_concurrency)
    procs = int(p.get("procs", 1))
    supervised = bool(p.get("supervised"))
    if supervised:
        a.supervised_argv(concurrency, procs)  # Unsupported before any work
    await a.enqueue_many(n)
    await set_target(r, n)
    with Workers(a, concurrency, procs, supervised=supervised) as workers:
        end = await wait_end(r, workers, _timeout(n))
        first = float(await r.get(common.FIRST))
        rss = workers.rss_kb()
    done = await check_done(r, n)
    return {
        "jobs_per_s": (n - 1) / max(end - first, 1e-9),
        "n": n,
        "checked": done,
        "concurrency": concurrency,
        "procs": procs,
        "supervised": supervised,
        "worker_rss_mb": rss / 1024,
    }


async def w3(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Start latency on an idle worker: N jobs paced ``pace_ms`` apart."""
    n = int(p["n"])
    pace = float(p.get("pace_ms", 2.0)) / 1000
    with Workers(a, a.default_concurrency) as workers:
        await a.enqueue(0.0)  # warm-up: the worker is up and idle after this
        await wait_count(r, common.DONE, 1, workers)
        await asyncio.sleep(0.3)
        await set_target(r, n + 1)
        began = time.perf_counter()
        for i in range(n):
            delay = began + i * pace - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await a.enqueue(time.time())
        await wait_end(r, workers, _timeout(n))
    done = await check_done(r, n + 1)
    latencies = sorted(float(v) for v in await r.lrange(common.LATENCY, 0, -1))
    if len(latencies) != n:
        raise CellError(f"{len(latencies)} latencies recorded, expected {n}")
    return {
        "p50_ms": _quantile(latencies, 0.50),
        "p99_ms": _quantile(latencies, 0.99),
        "max_ms": latencies[-1],
        "n": n,
        "checked": done - 1,
    }


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


async def w4(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Multi-step runs awaited one by one (as many as fit in ``seconds``);
    with ``invoke``, each step a child run (W4i)."""
    runs = int(p["n"])
    steps = int(p.get("steps", 10))
    budget = float(p.get("seconds", 20.0))
    chain = a.chain_invoke if p.get("invoke") else a.chain
    mode = "W4i" if p.get("invoke") else ""
    with Workers(a, a.default_concurrency, mode=mode) as workers:
        await chain(steps)  # warm-up (connections, scripts, worker ready)
        await wait_count(r, common.STEPS, steps, workers)
        times: list[float] = []
        stop_at = time.perf_counter() + budget
        while len(times) < runs and (len(times) < 2 or time.perf_counter() < stop_at):
            began = time.perf_counter()
            await chain(steps)
            times.append(time.perf_counter() - began)
    done = int(await r.get(common.STEPS) or 0)
    if done != steps * (len(times) + 1):
        raise CellError(f"{done} steps ran, expected {steps * (len(times) + 1)}")
    per_run = statistics.median(times) * 1000
    return {
        "ms_per_run": per_run,
        "ms_per_step": per_run / steps,
        "runs_per_s": len(times) / sum(times),
        "n": len(times),
        "checked": done,
    }


async def w6(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Per-run cost of draining ``measured`` jobs from a backlog of ``backlog``."""
    backlog = int(p["backlog"])
    measured = int(p["measured"])
    concurrency = int(p.get("concurrency") or a.default_concurrency)
    await a.enqueue_many(backlog)
    await set_target(r, measured)
    with Workers(a, concurrency) as workers:
        end = await wait_end(r, workers, _timeout(measured))
        first = float(await r.get(common.FIRST))
    done = int(await r.get(common.DONE) or 0)
    if done < measured:
        raise CellError(f"{done} jobs ran, expected at least {measured}")
    return {
        "us_per_run": (end - first) / (measured - 1) * 1e6,
        "backlog": backlog,
        "n": measured,
        "checked": done,
    }


async def w7(a: Adapter, r: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Redis bytes per queued run and per finished run kept; worker RSS."""
    n = int(p["n"])
    base = await used_memory(r)
    await a.enqueue_many(n)
    await a.close()  # its connections' buffers are not what we measure
    queued_bytes = (await used_memory(r) - base) / n
    await set_target(r, n)
    with Workers(a, int(p.get("concurrency") or a.default_concurrency)) as workers:
        await wait_end(r, workers, _timeout(n))
        await asyncio.sleep(0.5)
        rss = workers.rss_kb()
    done = await check_done(r, n)
    finished_bytes = (await used_memory(r) - base) / n
    return {
        "bytes_per_queued": queued_bytes,
        "bytes_per_finished": finished_bytes,
        "worker_rss_mb": rss / 1024,
        "n": n,
        "checked": done,
    }


Workload = Callable[[Adapter, Any, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]

WORKLOADS: dict[str, Workload] = {
    "W1": w1,
    "W1b": w1b,
    "W2": drain,
    "W3": w3,
    "W4": w4,
    "W5": drain,
    "W6": w6,
    "W7": w7,
    "W4i": w4,
}


async def run_cell(a: Adapter, params: dict[str, Any]) -> dict[str, Any]:
    from . import cost, events  # here: they import this module

    if params["workload"] == "W12":  # its own servers and clients (cost.py)
        return await cost.w12(a, params)
    workload = WORKLOADS.get(params["workload"]) or events.WORKLOADS[params["workload"]]
    r = aioredis.Redis.from_url(common.bench_url())
    await a.open()
    try:
        return await workload(a, r, params)
    finally:
        await a.close()
        await common.close_client()
        await r.aclose()


def _run_loop(coro: Coroutine[Any, Any, None]) -> None:
    """asyncio.run; on uvloop with ``$BENCH_LOOP=uvloop`` (bench.profile's
    comparisons: stackshift's worker picks uvloop itself when installed)."""
    if os.environ.get("BENCH_LOOP") == "uvloop":
        import uvloop  # the project's venv only

        uvloop.run(coro)
    else:
        asyncio.run(coro)


def main(adapter: Adapter, argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.<...>.<system>``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"]:
        _run_loop(adapter.serve(int(args[1]), args[2] if len(args) > 2 else ""))
        return 0
    if args[:1] == ["cell"]:
        params = json.loads(args[1])
        try:
            metrics = asyncio.run(run_cell(adapter, params))
        except Unsupported as exc:
            print(json.dumps({"skipped": str(exc)}), flush=True)
            return 0
        except CellError as exc:
            print(json.dumps({"error": str(exc)}), flush=True)
            return 1
        metrics["versions"] = adapter.versions()
        print(json.dumps(metrics), flush=True)
        return 0
    if args[:1] == ["versions"]:
        print(json.dumps(adapter.versions()))
        return 0
    print(f"usage: python -m {adapter.module} cell JSON | worker N [MODE] | versions")
    return 2
