"""The effects ledger: what handlers did, written outside Redis.

Each event is one line appended with ``os.write`` on an ``O_APPEND`` file
descriptor, so it is on disk the moment the call returns (it survives SIGKILL
of the writer) and lines from many processes never interleave. The checker
trusts this file, not the system under test.

Line format (tab-separated): run_id, step, attempt, pid, event, monotonic_ns,
value. Events: ``start`` / ``end`` (a step body ran; ``end`` carries the value
it returned), ``got`` (what ``ctx.step.run`` returned: the recorded value),
``return`` (the handler returned).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import defaultdict
from pathlib import Path

ENV = "FAULT_LEDGER"


@dataclasses.dataclass(slots=True, frozen=True)
class Event:
    run_id: str
    step: str
    attempt: int
    pid: int
    event: str
    ns: int
    value: str


class LedgerWriter:
    """Appends events; opened lazily from ``$FAULT_LEDGER`` (a no-op without it)."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._fd: int | None = None

    @classmethod
    def from_env(cls) -> LedgerWriter:
        return cls(os.environ.get(ENV) or None)

    def write(
        self, run_id: str, step: str, attempt: int, event: str, value: str = ""
    ) -> None:
        if self._path is None:
            return
        if self._fd is None:
            self._fd = os.open(
                self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        line = "\t".join(
            (
                run_id,
                step,
                str(attempt),
                str(os.getpid()),
                event,
                str(time.monotonic_ns()),
                value,
            )
        )
        os.write(self._fd, (line + "\n").encode())


class Ledger:
    """Reads a ledger file back (a torn last line, from a kill, is skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[Event]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 7:
                continue
            run_id, step, attempt, pid, event, ns, value = parts
            out.append(
                Event(run_id, step, int(attempt), int(pid), event, int(ns), value)
            )
        return out

    def count(self, event: str) -> int:
        return sum(1 for e in self.events() if e.event == event)

    def by_step(self) -> dict[tuple[str, str], list[Event]]:
        grouped: dict[tuple[str, str], list[Event]] = defaultdict(list)
        for e in self.events():
            grouped[(e.run_id, e.step)].append(e)
        return grouped

    def open_steps(self, pid: int) -> list[Event]:
        """Steps this process started and never ended (it was killed in them)."""
        started: dict[tuple[str, str, int], Event] = {}
        for e in self.events():
            if e.pid != pid:
                continue
            key = (e.run_id, e.step, e.attempt)
            if e.event == "start":
                started[key] = e
            elif e.event == "end":
                started.pop(key, None)
        return list(started.values())
