"""Events: sending (event_send.lua, slot {events}), routing each one to its
name's slot (event_route.lua: the name's log, the waiters it resolves), and
registering a run's wait (event_wait.lua, same slot as the router's, so the
two cannot race). See docs/events-and-time.md."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from ..serialization import decode, encode
from .base import StoreBase
from .keys import GROUP, derived_run_id
from .records import as_str, mapped_errors

# The longest JSON text of a top-level value that goes into the log for
# matching: longer strings (and objects, arrays) can be in an event, but are
# not matched on.
MAX_MATCH_VALUE = 512


@dataclasses.dataclass(slots=True, frozen=True)
class SentEvent:
    """An event read from the routing stream (entry), or found by a wait."""

    name: str
    event_id: str
    data: bytes  # JSON
    correlation_id: str
    sent_ms: int
    entry_id: str = ""


@dataclasses.dataclass(slots=True, frozen=True)
class Waiter:
    """A run's wait claimed by an event (a member of a name's waiter index)."""

    run_id: str
    step_key: str


# A run's creation time and an event's send time come from the clocks of two
# Redis servers on a cluster (the queue's and the events' slots): an event sent
# this long before the run was made still counts as sent after it.
CLOCK_SKEW_MS = 100


def wait_member(
    run_id: str, step_key: str, match: dict[str, Any], created_ms: int
) -> str:
    """A run's wait in an event name's index: ``<digest>|<since>|<run>|<step>``,
    the same whoever computes it (the run registering, a cancel cleaning up)."""
    names = sorted(match)
    values = [canonical(match[n]) for n in names]
    since = created_ms - CLOCK_SKEW_MS
    return f"{digest(names, values)}|{since}|{run_id}|{step_key}"


def subscriber_run_id(event: SentEvent, job: str, queue: str) -> str:
    """The run an event makes of a subscribed job: the same for every delivery."""
    seed = f"event\x1f{event.name}\x1f{event.event_id}\x1f{job}"
    return derived_run_id(queue, event.sent_ms, seed)


def canonical(value: Any) -> str:
    """The JSON text a match value is compared as (the same on both sides)."""
    return encode(value).decode()


def digest(fields: list[str], values: list[str]) -> str:
    """Which index bucket a (match fields, values) pair falls in."""
    text = "\x1f".join(f"{f}\x1e{v}" for f, v in zip(fields, values, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shape_of(fields: list[str]) -> str:
    """A match's shape: its sorted field names, as stored in the shapes hash."""
    return canonical(sorted(fields))


def matchable(data: Any) -> dict[str, str]:
    """The top-level scalar fields of an event's data, as canonical JSON: what
    a wait's ``match`` is compared with."""
    if not isinstance(data, dict):
        return {}
    out = {}
    for name, value in data.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            text = canonical(value)
            if len(text) <= MAX_MATCH_VALUE:
                out[str(name)] = text
    return out


class EventStore(StoreBase):
    async def send_event(
        self, name: str, event_id: str, data: bytes, correlation_id: str
    ) -> tuple[bool, str]:
        """Accept an event for routing: (sent, entry id); not sent if its id
        was seen for this name within the dedupe TTL."""
        reply = await self._call(
            "event_send",
            [self.keys.event_stream, self.keys.event_seen(name, event_id)],
            [
                name,
                event_id,
                data,
                correlation_id,
                int(self.settings.event_dedupe_ttl * 1000),
                secrets.token_hex(8),
            ],
        )
        if name not in self._registered_events:  # once per name and process
            with mapped_errors("register event"):
                await self.client.sadd(self.keys.registry("events"), name)
            self._registered_events.add(name)
        return as_str(reply[0]) == "sent", as_str(reply[1])

    async def ensure_event_group(self) -> None:
        if "{events}" in self._groups_made:
            return
        with mapped_errors("XGROUP CREATE"):
            try:
                await self.client.xgroup_create(
                    self.keys.event_stream, GROUP, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_made.add("{events}")

    async def read_events(
        self, consumer: str, count: int, block_ms: int
    ) -> list[SentEvent]:
        with mapped_errors("XREADGROUP events"):
            reply = await self.client.xreadgroup(
                GROUP,
                consumer,
                {self.keys.event_stream: ">"},
                count=count,
                block=None if self.memory else block_ms,
            )
        return [
            _sent(entry_id, f) for _s, entries in reply or () for entry_id, f in entries
        ]

    async def reclaim_events(
        self, consumer: str, min_idle_ms: int, count: int
    ) -> list[SentEvent]:
        """Events whose router died before it was done with them."""
        with mapped_errors("XAUTOCLAIM events"):
            reply = await self.client.xautoclaim(
                self.keys.event_stream, GROUP, consumer, min_idle_ms, "0-0", count=count
            )
        return [_sent(entry_id, f) for entry_id, f in reply[1] if entry_id]

    async def event_done(self, events: list[SentEvent]) -> None:
        """Routed: the events leave the routing stream."""
        ids = [e.entry_id for e in events if e.entry_id]
        if not ids:
            return
        with mapped_errors("XACK events"):
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.keys.event_stream, GROUP, *ids)
            pipe.xdel(self.keys.event_stream, *ids)
            await pipe.execute()

    async def route_event(
        self, event: SentEvent, shapes: tuple[str, list[str]]
    ) -> tuple[list[Waiter], int, tuple[str, list[str]] | None]:
        """Log the event in its name's slot and claim the waiters it resolves.

        ``shapes``: (version, shapes) of the name's match shapes as last seen.
        Returns (waiters claimed, the send time of its first routing, None), or
        ([], 0, new shapes) when the shapes changed: compute again and call
        again."""
        k = self.keys.events(event.name)
        data = decode(event.data)
        fields = matchable(data)
        version, known = shapes
        digests = []
        for shape in known:
            if shape.startswith("#"):
                continue  # the version counter
            names = decode(shape)
            if all(n in fields for n in names):
                digests.append(digest(names, [fields[n] for n in names]))
        flat: list[Any] = []
        for name, text in fields.items():
            flat += [name, text]
        s = self.settings
        reply = await self._call(
            "event_route",
            [k.log, k.index, k.expiry, k.shapes, k.routed(event.event_id)],
            [
                event.event_id,
                event.data,
                event.correlation_id,
                event.sent_ms,
                version,
                int(s.event_lookback * 1000),
                # Long enough for any redelivery of the event, and for its log
                # entry to leave the lookback window.
                int(2 * s.event_lookback * 1000),
                len(digests),
                *digests,
                *flat,
            ],
        )
        if as_str(reply[0]) == "shapes":
            return [], 0, (as_str(reply[1]), [as_str(x) for x in reply[2]])
        routed = decode(reply[1], _Routed)
        return _waiters(routed.w), routed.t, None

    async def register_wait(
        self,
        name: str,
        *,
        run_id: str,
        step_key: str,
        match: dict[str, Any],
        created_ms: int,
        expires_ms: int | None,
    ) -> SentEvent | None:
        """Register a run's wait for an event of ``name``, unless one sent
        since the run was made (within the lookback) matches: then that event."""
        k = self.keys.events(name)
        names = sorted(match)
        values = [canonical(match[n]) for n in names]
        since_ms = created_ms - CLOCK_SKEW_MS
        member = wait_member(run_id, step_key, match, created_ms)
        pairs: list[Any] = []
        for n, v in zip(names, values, strict=True):
            pairs += [n, v]
        reply = await self._call(
            "event_wait",
            [k.log, k.index, k.expiry, k.shapes],
            [
                member,
                shape_of(names),
                since_ms,
                "inf" if expires_ms is None else expires_ms,
                int(self.settings.event_lookback * 1000),
                *pairs,
            ],
        )
        if as_str(reply[0]) != "matched":
            return None
        return SentEvent(
            name, as_str(reply[1]), reply[2], as_str(reply[3]), int(reply[4])
        )

    async def unregister_wait(
        self, names: list[str], run_id: str, step_key: str, match: dict[str, Any],
        created_ms: int,
    ) -> None:  # fmt: skip
        """Take a run's wait out of these names' indexes: it was resolved by
        another name's event, or timed out, or its run was cancelled (a waiter
        left there would only go when a matching event came, or never)."""
        member = wait_member(run_id, step_key, match, created_ms)
        for name in names:
            k = self.keys.events(name)
            with mapped_errors("unregister wait"):
                pipe = self.client.pipeline(transaction=False)
                pipe.zrem(k.index, member)
                pipe.zrem(k.expiry, member)
                await pipe.execute()

    async def events_unrouted(self) -> int:
        """Events sent and not yet routed (they leave the stream once routed)."""
        with mapped_errors("XLEN events"):
            return int(await self.client.xlen(self.keys.event_stream))

    async def recent_events(self, name: str, limit: int) -> list[SentEvent]:
        """The newest events of a name still in its log (the look-back window),
        newest first."""
        with mapped_errors("events log"):
            entries = await self.client.xrevrange(
                self.keys.events(name).log, "+", "-", count=limit
            )
        return [
            SentEvent(
                name=name,
                event_id=as_str(f.get(b"i", b"")),
                data=f.get(b"d", b"null"),
                correlation_id=as_str(f.get(b"c", b"")),
                sent_ms=int(f.get(b"t", b"0")),
            )
            for _entry, f in entries
        ]

    async def claims_of(self, name: str, event_id: str) -> list[Waiter]:
        """The waiters an event resumed (while its routed record lasts)."""
        with mapped_errors("routed"):
            raw = await self.client.get(self.keys.events(name).routed(event_id))
        return _waiters(decode(raw, _Routed).w) if raw else []

    async def event_shapes(self, name: str) -> tuple[str, list[str]]:
        with mapped_errors("event shapes"):
            raw = await self.client.hgetall(self.keys.events(name).shapes)
        shapes = {as_str(k): as_str(v) for k, v in raw.items()}
        version = shapes.pop("#v", "0")
        return version, list(shapes)

    # --- subscriptions: on_event jobs ------------------------------------------

    async def subscribe(self, subs: dict[str, list[tuple[str, str]]]) -> None:
        """Record which jobs (and their queues) the events of each name make
        runs of, so that any worker's router can make them."""
        if not subs:
            return
        mapping = {
            f"{name}\x1f{job}": queue
            for name, jobs in subs.items()
            for job, queue in jobs
        }
        with mapped_errors("subscribe"):
            await self.client.hset(self.keys.subscriptions, mapping=mapping)

    async def unsubscribe(self, pairs: list[tuple[str, str]]) -> None:
        if pairs:
            with mapped_errors("unsubscribe"):
                await self.client.hdel(
                    self.keys.subscriptions, *(f"{n}\x1f{j}" for n, j in pairs)
                )

    async def subscriptions(self) -> dict[str, list[tuple[str, str]]]:
        """Event name -> [(job, queue)]."""
        with mapped_errors("subscriptions"):
            raw = await self.client.hgetall(self.keys.subscriptions)
        out: dict[str, list[tuple[str, str]]] = {}
        for key, queue in raw.items():
            name, _, job = as_str(key).partition("\x1f")
            out.setdefault(name, []).append((job, as_str(queue)))
        return out


class _Routed(msgspec.Struct, frozen=True):
    """An event's routed record (event_route.lua)."""

    t: int  # the send time of its first routing (ms)
    w: list[str] | dict[str, Any] = msgspec.field(default_factory=list)


def _waiters(claimed: list[str] | dict[str, Any]) -> list[Waiter]:
    """The runs and steps of waiter members ('<digest>|<since>|<run>|<step>');
    (an empty list may come back from Lua as an empty object)."""
    out = []
    for member in claimed if isinstance(claimed, list) else ():
        _digest, _since, run_id, step = member.split("|", 3)
        out.append(Waiter(run_id, step))
    return out


def _sent(entry_id: Any, fields: dict[bytes, bytes]) -> SentEvent:
    entry = as_str(entry_id)
    return SentEvent(
        name=as_str(fields.get(b"n", b"")),
        event_id=as_str(fields.get(b"i", b"")),
        data=fields.get(b"d", b"null"),
        correlation_id=as_str(fields.get(b"c", b"")),
        sent_ms=int(entry.partition("-")[0]),
        entry_id=entry,
    )
