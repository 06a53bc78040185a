"""Supervisor: ``stackshift worker ... --processes N`` runs N worker processes.

One Python process runs one event loop on one core; a host with more cores
serves more runs with more processes. The supervisor starts N children (each a
plain ``stackshift worker`` with the same options and a consumer name of its
own), restarts a child that dies (after a backoff that grows while it keeps
dying), and on SIGTERM/SIGINT passes the signal on and waits for every child
to drain (a second signal is passed on too: the children hand their runs back
at once). With ``--burst``, a child that exits 0 found its queues empty: it is
not restarted, and the supervisor exits once every child has. It runs no jobs
itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable

from ..logs import get_logger

log = get_logger("stackshift.worker")

# A child that lived this long before it died is restarted at once; sooner,
# after a backoff doubling from 1 s to 30 s (a child that cannot start must
# not spin).
HEALTHY_SECONDS = 60.0
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
# After the grace period, children still running get this long to hand their
# runs back, then SIGKILL (their runs are taken over after their lease).
KILL_AFTER = 10.0


def _stop_with_parent() -> None:
    """In a child, before it runs: on Linux, have the kernel send it SIGTERM if
    the supervisor dies (killed with -9, say), so it drains instead of running
    on without one."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclasses.dataclass(slots=True)
class _Child:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = 0.0
    done: bool = False  # burst: it exited 0, its queues empty


class Supervisor:
    """Runs ``processes`` children of ``argv`` (a ``stackshift worker`` command
    line without ``--processes``), each with the options ``own(n)`` gives child
    ``n`` (its consumer name, health file, metrics port). ``burst``: the
    children run with ``--burst``; one that exits 0 is done, not restarted."""

    def __init__(
        self,
        argv: list[str],
        processes: int,
        *,
        grace_period: float,
        own: Callable[[int], list[str]] = lambda n: [],
        burst: bool = False,
    ) -> None:
        self._argv = argv
        self._burst = burst
        self._children = [_Child(i) for i in range(processes)]
        self._grace = grace_period
        self._own = own
        self._stopping = asyncio.Event()
        self._signals = 0

    async def run(self) -> int:
        """Until a signal stops every child (or, in burst mode, every child has
        exited 0); the exit status (0: all drained)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info("supervisor_started", processes=len(self._children), pid=os.getpid())
        try:
            watching = [asyncio.create_task(self._keep(c)) for c in self._children]
            await self._stopping.wait()
            return await self._drain(watching)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        self._stopping.set()
        for child in self._children:  # first: drain; second: hand back now
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(sig)

    async def _keep(self, child: _Child) -> None:
        """Start the child, and start it again each time it dies (until stopped)."""
        while not self._stopping.is_set():
            child.process = await self._spawn(child)
            child.started = time.monotonic()
            status = await child.process.wait()
            if self._stopping.is_set():
                return
            if self._burst and status == 0:  # its queues are empty: done
                child.done = True
                log.info(
                    "worker_process_done", index=child.index, pid=child.process.pid
                )
                if all(c.done for c in self._children):
                    self._stopping.set()
                return
            lived = time.monotonic() - child.started
            child.backoff = (
                0.0
                if lived >= HEALTHY_SECONDS
                else min(BACKOFF_CAP, max(BACKOFF_FIRST, child.backoff * 2))
            )
            log.warning(
                "worker_process_died",
                index=child.index,
                pid=child.process.pid,
                status=status,
                restart_in=child.backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.backoff)

    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        argv = [*self._argv, *self._own(child.index)]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stackshift",
            *argv,
            env={**os.environ, "STACKSHIFT_WORKER_INDEX": str(child.index)},
            preexec_fn=_stop_with_parent,
        )
        log.info("worker_process_started", index=child.index, pid=process.pid)
        return process

    async def _drain(self, watching: list[asyncio.Task[None]]) -> int:
        """Wait for the children to finish their runs; then kill what is left."""
        running = [
            c.process
            for c in self._children
            if c.process is not None and c.process.returncode is None
        ]
        done, left = (
            await asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in running],
                timeout=self._grace + KILL_AFTER,
            )
            if running
            else (set(), set())
        )
        for child in self._children:
            if child.process is not None and child.process.returncode is None:
                log.warning("worker_process_killed", index=child.index)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
        for task in watching:
            task.cancel()
        await asyncio.gather(*watching, return_exceptions=True)
        statuses = [c.process.returncode for c in self._children if c.process]
        log.info("supervisor_stopped", statuses=statuses)
        # A child still starting when the signal came dies of it: it had
        # nothing to drain, and it stopped as asked.
        stopped = {0, -signal.SIGTERM, -signal.SIGINT}
        return 0 if all(s in stopped for s in statuses) and not left else 1
