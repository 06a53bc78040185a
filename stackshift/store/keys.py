"""Every Redis key name stackshift uses, and the checks on names that reach them.

Layout (``P`` is the prefix, ``stackshift:`` by default; docs/redis-layout.md
mirrors this module):

- Per queue, all in hash slot ``{<queue>}`` so one script can touch them all on
  Redis Cluster: ``P{q}:stream``, ``P{q}:delayed``, ``P{q}:suspended``,
  ``P{q}:completed``, ``P{q}:cancelled``, ``P{q}:dead``, ``P{q}:stats``,
  ``P{q}:handoffs``, ``P{q}:cancels``, ``P{q}:minute:<n>``, ``P{q}:corr:<id>``,
  ``P{q}:run:<run_id>``,
  ``P{q}:steps:<run_id>``, ``P{q}:idem:<key>``, ``P{q}:queued:<ms>`` (where
  queued runs without a record are), ``P{q}:cron:<name>``, and the pub/sub
  channels ``P{q}:finished``, ``P{q}:wake`` and ``P{q}:cancel``.
- Per counter, in its own slot: ``P{c:<key>}`` and ``P{c:<key>}:seen:<run_id>``.
- Events: the routing stream ``P{events}:stream``, ``P{events}:seen:<name>:<id>``
  and ``P{events}:subs``, in slot ``{events}``; per event name, in slot
  ``{e:<name>}``: ``P{e:<name>}:log``, ``:waiters``, ``:expiry``, ``:shapes`` and
  ``:routed:<id>``.
- Registries of names: ``P{registry}:queues``, ``:counters``, ``:events``, ``:crons``.

User text (idempotency and counter keys, event ids) enters a key as-is only when
it is short and made of safe characters; otherwise its SHA-256 goes in and the
original is kept inside the value for display.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time

from ..errors import InvalidNameError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SAFE_TEXT_RE = re.compile(r"^[A-Za-z0-9_.:@/=+-]{1,100}$")
MAX_FREE_TEXT = 1024
GROUP = "stackshift"  # the consumer group of every queue stream

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RUN_ID_RE = re.compile(
    r"^[0-9A-HJKMNP-TV-Z]{26}\.([A-Za-z0-9_.-]{1,64}(?::[0-9]{1,3})?)$"
)
# A partition of a queue (app.queue(name, partitions=N)): "<name>:<n>", its own
# hash slot. A colon cannot be in a queue's name, so no queue is mistaken for one.
_PARTITION_RE = re.compile(r"^([A-Za-z0-9_.-]{1,64}):([0-9]{1,3})$")
MAX_PARTITIONS = 256


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it is a valid queue or job name, else raise."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidNameError(
            f"invalid {what} name {name!r}: use 1 to 64 characters of "
            "letters, digits, '_', '.' or '-'"
        )
    return name


def key_part(text: object, what: str) -> str:
    """The form of free text that may enter a key name: as-is, or ``h:<sha256>``."""
    if not isinstance(text, str) or not text:
        raise InvalidNameError(f"{what} must be a non-empty string, got {text!r}")
    if len(text) > MAX_FREE_TEXT:
        raise InvalidNameError(f"{what} is {len(text)} characters; the limit is 1024")
    if _SAFE_TEXT_RE.match(text) and not text.startswith("h:"):
        return text
    return "h:" + hashlib.sha256(text.encode()).hexdigest()


def check_prefix(prefix: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.:-]{0,64}$", prefix):
        raise InvalidNameError(
            f"invalid key prefix {prefix!r}: letters, digits, '_', '.', ':' or '-'"
        )
    return prefix


# Two Crockford characters per 10 bits: the 16 random characters of an id are
# 8 lookups (base64.b32hexencode, then translating its alphabet, took 3 µs).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


def _encode_pairs(value: int, pairs: int) -> str:
    """The lowest ``10 * pairs`` bits of ``value`` as Crockford base32."""
    return "".join(
        [_PAIRS[(value >> shift) & 1023] for shift in range(10 * (pairs - 1), -1, -10)]
    )


class _RunIdClock:
    """Time-sortable ids (ULID layout), monotonic within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._rand = 0
        self._time_part = ""  # the 10 characters of _last_ms

    def next(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                self._rand = (self._rand + 1) & ((1 << 80) - 1)
            else:
                self._rand = int.from_bytes(os.urandom(10), "big")
                self._last_ms = ms
                # 48 bits of time in 10 characters (50 bits, the top 2 zero).
                self._time_part = _encode_pairs(ms, 5)
            return self._time_part + _encode_pairs(self._rand, 8)


_clock = _RunIdClock()


def new_run_id(queue: str) -> str:
    """A new run id: 26 time-sortable characters, a dot, and the queue name."""
    return f"{_clock.next()}.{queue}"


def new_event_id() -> str:
    """An event id for an event sent without one: unique, time-sortable."""
    return "evt_" + _clock.next()


def derived_run_id(queue: str, time_ms: int, seed: str) -> str:
    """A run id made from what it stands for, not at random: the same ``seed``
    (an event id and job, a parent run and step, a cron tick) always gives the
    same id, so whoever makes that run a second time finds it exists. Sorted
    by ``time_ms`` like any other id."""
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big")
    return f"{_encode_pairs(time_ms, 5)}{_encode_pairs(digest, 8)}.{queue}"


def time_of_run(run_id: str) -> int:
    """The creation time (ms) written in a run id's first 10 characters."""
    value = 0
    for char in run_id[:10]:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def partition_name(queue: str, n: int) -> str:
    """The queue that partition ``n`` of ``queue`` is."""
    return f"{queue}:{n}"


def split_partition(queue: str) -> tuple[str, int | None]:
    """(the logical queue, the partition) of a queue as stored."""
    match = _PARTITION_RE.match(queue)
    if match is None:
        return queue, None
    return match.group(1), int(match.group(2))


def in_stored_queue(run_id: str, queue: str) -> str:
    """A run id made for a queue, naming the partition it goes to instead."""
    return f"{run_id[:26]}.{queue}"


def check_stored_queue(queue: object) -> str:
    """A queue name as keys use it: a queue's name, or one of its partitions."""
    if isinstance(queue, str) and _PARTITION_RE.match(queue):
        return queue
    return check_name(queue, "queue")


def queue_of_run(run_id: object) -> str:
    """The queue a run id belongs to; raise ``InvalidNameError`` if malformed."""
    match = _RUN_ID_RE.match(run_id) if isinstance(run_id, str) else None
    if match is None:
        raise InvalidNameError(f"invalid run id {run_id!r}")
    return match.group(1)


class QueueKeys:
    """Key names of one queue, all sharing the hash tag ``{<queue>}``."""

    __slots__ = (
        "_base",
        "cancel_channel",
        "cancelled",
        "cancels",
        "completed",
        "dead",
        "delayed",
        "finished",
        "handoffs",
        "name",
        "stats",
        "stream",
        "suspended",
        "wake",
    )

    def __init__(self, prefix: str, queue: str) -> None:
        self.name = check_stored_queue(queue)
        self._base = f"{prefix}{{{queue}}}:"
        self.stream = self._base + "stream"
        self.delayed = self._base + "delayed"  # scheduled runs, by due time
        self.suspended = self._base + "suspended"  # by deadline (inf: none)
        self.completed = self._base + "completed"  # by when they ended
        self.cancelled = self._base + "cancelled"
        self.dead = self._base + "dead"
        self.stats = self._base + "stats"
        self.handoffs = self._base + "handoffs"  # children to tell their parent
        self.cancels = self._base + "cancels"  # entry id -> run asked to cancel
        self.finished = self._base + "finished"  # pub/sub: a run ended
        self.wake = self._base + "wake"  # pub/sub: an earlier due time
        self.cancel_channel = self._base + "cancel"  # pub/sub: cancel a running run

    @property
    def base(self) -> str:
        """``<prefix>{<queue>}:``, which every key of the queue starts with."""
        return self._base

    def run(self, run_id: str) -> str:
        return f"{self._base}run:{run_id}"

    def steps(self, run_id: str) -> str:
        return f"{self._base}steps:{run_id}"

    def run_keys(self, run_id: str) -> list[str]:
        """A run's record, steps and queued-index bucket: the 3 keys of a run
        in start.lua and finish.lua (one call per run, not three)."""
        base = self._base
        return [
            f"{base}run:{run_id}",
            f"{base}steps:{run_id}",
            f"{base}queued:{run_id[:10]}",
        ]

    def queued_index(self, run_id: str) -> tuple[str, str]:
        """(bucket key, field) indexing a queued run that has no record yet: a
        hash per millisecond of run ids (an id's first 10 characters are its
        time), field = the rest of the id's 26 characters (_enqueue.lua)."""
        return f"{self._base}queued:{run_id[:10]}", run_id[10:26]

    def bucket(self, run_id: str) -> str:
        """The queued-index bucket of a run (see ``queued_index``)."""
        return f"{self._base}queued:{run_id[:10]}"

    def idem(self, idempotency_key: str) -> str:
        return self._base + "idem:" + key_part(idempotency_key, "idempotency key")

    def cron(self, name: str) -> str:
        return self._base + "cron:" + check_name(name, "cron")

    def minute(self, epoch_minute: int) -> str:
        """Counts of runs that ended in one minute (the dashboard's throughput)."""
        return f"{self._base}minute:{epoch_minute}"

    def correlated(self, correlation_id: str) -> str:
        """The runs of this queue made with a correlation id (an index)."""
        return self._base + "corr:" + key_part(correlation_id, "correlation id")


class EventKeys:
    """Key names of one event name, all sharing the hash tag ``{e:<name>}``:
    its recent events (which waits look back over) and its waiters."""

    __slots__ = ("_base", "expiry", "index", "log", "name", "shapes")

    def __init__(self, prefix: str, name: str) -> None:
        self.name = check_name(name, "event")
        self._base = f"{prefix}{{e:{name}}}:"
        self.log = self._base + "log"
        self.index = self._base + "waiters"
        self.expiry = self._base + "expiry"
        self.shapes = self._base + "shapes"

    def routed(self, event_id: str) -> str:
        return self._base + "routed:" + key_part(event_id, "event id")


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self._queues: dict[str, QueueKeys] = {}
        self._events: dict[str, EventKeys] = {}

    def queue(self, name: str) -> QueueKeys:
        keys = self._queues.get(name)
        if keys is None:
            keys = self._queues[name] = QueueKeys(self.prefix, name)
        return keys

    def events(self, name: str) -> EventKeys:
        keys = self._events.get(name)
        if keys is None:
            keys = self._events[name] = EventKeys(self.prefix, name)
        return keys

    @property
    def event_stream(self) -> str:
        """The stream every sent event goes through to be routed."""
        return f"{self.prefix}{{events}}:stream"

    def event_seen(self, name: str, event_id: str) -> str:
        return f"{self.prefix}{{events}}:seen:{name}:{key_part(event_id, 'event id')}"

    @property
    def subscriptions(self) -> str:
        """Which jobs the events of each name make runs of (``on_event``)."""
        return f"{self.prefix}{{events}}:subs"

    def registry(self, kind: str) -> str:
        """The names of the queues, counters, event names or crons used so far
        (a set), for listings that must not scan keys."""
        return f"{self.prefix}{{registry}}:{kind}"

    @property
    def queue_registry(self) -> str:
        return self.registry("queues")

    def counter(self, key: str) -> str:
        return f"{self.prefix}{{c:{key_part(key, 'counter key')}}}"

    def counter_seen(self, key: str, run_id: str) -> str:
        return f"{self.counter(key)}:seen:{run_id}"
