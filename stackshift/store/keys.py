"""Every Redis key name stackshift uses, and the checks on names that reach them.

Layout (``P`` is the prefix, ``stackshift:`` by default; docs/redis-layout.md
mirrors this module):

- Per queue, all in hash slot ``{<queue>}`` so one script can touch them all on
  Redis Cluster: ``P{q}:stream``, ``P{q}:delayed``, ``P{q}:dead``, ``P{q}:stats``,
  ``P{q}:run:<run_id>``, ``P{q}:steps:<run_id>``, ``P{q}:idem:<key>``,
  ``P{q}:queued:<ms>`` (where queued runs without a record are), and the
  pub/sub channel ``P{q}:finished``.
- Per counter, in its own slot: ``P{c:<key>}`` and ``P{c:<key>}:seen:<run_id>``.

User text (idempotency and counter keys) enters a key as-is only when it is short
and made of safe characters; otherwise its SHA-256 goes in and the original is
kept inside the value for display.
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
_RUN_ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}\.([A-Za-z0-9_.-]{1,64})$")


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


def queue_of_run(run_id: object) -> str:
    """The queue a run id belongs to; raise ``InvalidNameError`` if malformed."""
    match = _RUN_ID_RE.match(run_id) if isinstance(run_id, str) else None
    if match is None:
        raise InvalidNameError(f"invalid run id {run_id!r}")
    return match.group(1)


class QueueKeys:
    """Key names of one queue, all sharing the hash tag ``{<queue>}``."""

    __slots__ = ("_base", "dead", "delayed", "finished", "name", "stats", "stream")

    def __init__(self, prefix: str, queue: str) -> None:
        self.name = check_name(queue, "queue")
        self._base = f"{prefix}{{{queue}}}:"
        self.stream = self._base + "stream"
        self.delayed = self._base + "delayed"
        self.dead = self._base + "dead"
        self.stats = self._base + "stats"
        self.finished = self._base + "finished"  # pub/sub channel

    @property
    def base(self) -> str:
        """``<prefix>{<queue>}:``, which every key of the queue starts with."""
        return self._base

    def run(self, run_id: str) -> str:
        return f"{self._base}run:{run_id}"

    def steps(self, run_id: str) -> str:
        return f"{self._base}steps:{run_id}"

    def queued_index(self, run_id: str) -> tuple[str, str]:
        """(bucket key, field) indexing a queued run that has no record yet: a
        hash per millisecond of run ids (an id's first 10 characters are its
        time), field = the rest of the id's 26 characters (_prelude.lua)."""
        return f"{self._base}queued:{run_id[:10]}", run_id[10:26]

    def idem(self, idempotency_key: str) -> str:
        return self._base + "idem:" + key_part(idempotency_key, "idempotency key")


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self._queues: dict[str, QueueKeys] = {}

    def queue(self, name: str) -> QueueKeys:
        keys = self._queues.get(name)
        if keys is None:
            keys = self._queues[name] = QueueKeys(self.prefix, name)
        return keys

    def counter(self, key: str) -> str:
        return f"{self.prefix}{{c:{key_part(key, 'counter key')}}}"

    def counter_seen(self, key: str, run_id: str) -> str:
        return f"{self.counter(key)}:seen:{run_id}"
