"""An append-only effects ledger kept outside Redis.

Job code in worker subprocesses appends one JSON line per event with a single
``os.write`` on an ``O_APPEND`` descriptor, so a line is whole or absent even when
the process is killed with SIGKILL. Tests read it back to check what really ran,
without trusting what the system under test says about itself.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stackshift import RunInfo

Line = dict[str, Any]


def append(path: str | os.PathLike[str], **fields: Any) -> None:
    """Append one event (a JSON object on one line) to the ledger at ``path``."""
    data = (json.dumps(fields, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(path: str | os.PathLike[str]) -> list[Line]:
    """Every whole line of the ledger, in the order written (empty if absent)."""
    file = Path(path)
    if not file.exists():
        return []
    lines = file.read_bytes().split(b"\n")
    return [json.loads(line) for line in lines if line.strip()]


def select(lines: Iterable[Line], **match: Any) -> list[Line]:
    """The lines whose fields equal every ``match`` value."""
    return [line for line in lines if all(line.get(k) == v for k, v in match.items())]


def starts_per_step(lines: Iterable[Line], run_id: str) -> Counter[str]:
    """How many times each step of ``run_id`` started."""
    return Counter(
        line["step"]
        for line in lines
        if line.get("run_id") == run_id and line.get("event") == "start"
    )


def step_violations(lines: list[Line], run: RunInfo) -> list[str]:
    """What the ledger shows that a run's step records forbid (empty if nothing).

    For every recorded step: the attempt that recorded it started it exactly once
    and ended it in the process whose value was recorded (when the value carries a
    ``pid``), and no later attempt started it again (P3: no step body starts after
    its record was committed).
    """
    problems = []
    for step in run.steps:
        starts = select(lines, run_id=run.run_id, step=step.step_id, event="start")
        later = [s for s in starts if s["attempt"] > step.attempt]
        if later:
            problems.append(
                f"{step.step_id} was recorded by attempt {step.attempt} but started "
                f"again by {[(s['attempt'], s['pid']) for s in later]}"
            )
        same = [s for s in starts if s["attempt"] == step.attempt]
        if len(same) != 1:
            problems.append(
                f"{step.step_id}: attempt {step.attempt} started it {len(same)} times"
            )
        pid = step.result.get("pid") if isinstance(step.result, dict) else None
        ends = select(lines, run_id=run.run_id, step=step.step_id, event="end", pid=pid)
        if pid is not None and not any(e["attempt"] == step.attempt for e in ends):
            problems.append(
                f"{step.step_id}: the recorded value (pid {pid}) matches no 'end' "
                f"line of attempt {step.attempt}"
            )
    return problems
