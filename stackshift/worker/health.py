"""Health file: a liveness signal for orchestrator probes (`stackshift check`).

Every few seconds, after a successful PING, the worker rewrites a small JSON
file. If the event loop is wedged or Redis is unreachable, the file goes
stale, and `stackshift check --health-file F --max-age S` exits 1.

And ``log_task_waits``: what every task of a worker waits on (SIGUSR1).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import anyio

from ..errors import StoreError
from ..logs import get_logger
from ..store import Store
from .slots import Slots

log = get_logger("stackshift.worker")

HEALTH_INTERVAL = 5.0


class HealthReporter:
    def __init__(self, store: Store, path: str, consumer: str, slots: Slots) -> None:
        self._store = store
        self._path = Path(path)
        self._consumer = consumer
        self._slots = slots

    async def run(self) -> None:
        while True:
            try:
                with anyio.fail_after(HEALTH_INTERVAL):
                    await self._store.ping()
                self.write()
            except (StoreError, TimeoutError) as exc:
                log.warning("health_check_failed", error=str(exc) or "PING timed out")
            await anyio.sleep(HEALTH_INTERVAL)

    def write(self) -> None:
        record = {
            "at": time.time(),
            "consumer": self._consumer,
            "running": self._slots.busy,
        }
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self._path)  # atomic: a probe never reads half a file

    def remove(self) -> None:
        self._path.unlink(missing_ok=True)


def check(path: str, max_age: float) -> tuple[bool, str]:
    """(healthy, why) for the health file at ``path``."""
    try:
        record = json.loads(Path(path).read_text())
        age = time.time() - float(record["at"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"no usable health file at {path}: {exc}"
    if age > max_age:
        return False, f"stale: last healthy {age:.1f} s ago (max {max_age:g} s)"
    return True, f"healthy {age:.1f} s ago, {record.get('running', 0)} runs in flight"


def log_task_waits() -> None:
    """Log, for every asyncio task, the chain of coroutines it is suspended in
    (outermost first): where a stuck worker waits, without a debugger. Sent
    to a worker with SIGUSR1."""
    for task in asyncio.all_tasks():
        chain = []
        coro: object = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                code = frame.f_code
                chain.append(
                    f"{code.co_qualname} ({code.co_filename}:{frame.f_lineno})"
                )
            coro = getattr(coro, "cr_await", None) or getattr(
                coro, "gi_yieldfrom", None
            )
        log.warning("worker_task_waits", task=task.get_name(), waits=chain)
