"""Health file: a liveness signal for orchestrator probes (`stackshift check`).

Every few seconds, after a successful PING, the worker rewrites a small JSON
file. If the event loop is wedged or Redis is unreachable, the file goes
stale, and `stackshift check --health-file F --max-age S` exits 1.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio
import structlog

from ..errors import StoreError
from ..store import Store
from .slots import Slots

log = structlog.get_logger("stackshift.worker")

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
