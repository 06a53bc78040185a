"""Reads the CLI needs that the store does not offer yet (read-only, through
``app.store.client``): candidates for store/inspect.py."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..app import Stackshift
from ..serialization import ChildValue, step_record_decoder
from ..store.keys import queue_of_run
from ..store.records import as_str, mapped_errors

_child_decoder = msgspec.json.Decoder(ChildValue)


async def ended_counts(
    app: Stackshift, queues: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """(completed, cancelled) runs each queue still keeps (within the result
    retention), in one round trip."""
    if not queues:
        return {}
    with mapped_errors("queues"):
        pipe = app.store.client.pipeline(transaction=False)
        for queue in queues:
            keys = app.store.keys.queue(queue)
            pipe.zcard(keys.completed)
            pipe.zcard(keys.cancelled)
        replies = await pipe.execute()
    return {
        queue: (int(replies[2 * i]), int(replies[2 * i + 1]))
        for i, queue in enumerate(queues)
    }


class StepKind(msgspec.Struct, frozen=True):
    """What recorded a step: "" (step.run), "sleep", "event" or "invoke"; an
    invoke step's child run."""

    kind: str
    child_run_id: str | None = None


async def step_kinds(app: Stackshift, run_id: str) -> dict[str, StepKind]:
    """Each recorded step of a run by its id, with its kind (``RunInfo.steps``
    does not carry it)."""
    keys = app.store.keys.queue(queue_of_run(run_id))
    with mapped_errors("steps"):
        raw = await app.store.client.hgetall(keys.steps(run_id))
    kinds: dict[str, StepKind] = {}
    for step_id, value in raw.items():
        try:
            record = step_record_decoder.decode(value)
        except msgspec.DecodeError:  # not ours to judge here: shown as stored
            continue
        child = None
        if record.k == "invoke":
            try:
                child = _child_decoder.decode(bytes(record.v)).run_id
            except msgspec.DecodeError:
                child = None
        kinds[as_str(step_id)] = StepKind(record.k, child)
    return kinds
