"""Store: the only package that speaks Redis.

One typed method per state change of a run; each is one Lua script (see lua/),
fenced where a worker acts on an entry it holds. redis-py results are converted
here, so no ``Any`` leaves this package. The Store is assembled from one class
per role:

- base.py      connections (one set per event loop), scripts, key names
- enqueue.py   making runs
- intake.py    a worker reading entries and starting runs
- steps.py     what a running attempt writes: steps, counters
- finish.py    every way a run leaves a worker
- control.py   changes from outside an attempt: cancel, re-drive, resume,
               timers, hand-offs, cron ticks
- events.py    sending, routing and waiting for events
- inspect.py   read-only views
"""

from __future__ import annotations

from ..errors import StoreError
from .control import ControlStore
from .events import EventStore, SentEvent, Waiter
from .inspect import InspectStore
from .intake import IntakeStore
from .records import (
    Cancel,
    Complete,
    DeadLetter,
    EnqueueRequest,
    EnqueueResult,
    Entry,
    Finish,
    Finished,
    Gate,
    Lease,
    QueueStats,
    Release,
    Retry,
    StartResult,
    Suspend,
    may_run,
)
from .steps import StepStore

__all__ = [
    "Cancel",
    "Complete",
    "DeadLetter",
    "EnqueueRequest",
    "EnqueueResult",
    "Entry",
    "Finish",
    "Finished",
    "Gate",
    "Lease",
    "QueueStats",
    "Release",
    "Retry",
    "SentEvent",
    "StartResult",
    "Store",
    "StoreError",
    "may_run",
    "Suspend",
    "Waiter",
]


class Store(
    IntakeStore,  # and FinishStore, which it carries
    StepStore,
    ControlStore,  # and EventStore, EnqueueStore, which it uses
    EventStore,
    InspectStore,
):
    """Typed access to one Redis (or memory://) for one prefix: every state
    change of a run, and what the app and the CLI read."""
