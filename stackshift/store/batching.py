"""Group commit for script calls.

Callers queue a script call and await its reply; one flusher sends every call
that piled up while the previous flush was in flight as one pipeline. Idle, a
call goes out at once, from the caller's task (no added latency); under load,
the calls of many concurrent runs share round trips.

Multi-item scripts (complete.lua) go further: concurrent items with the same
script and shared part (e.g. every completion on one queue) are merged into one
script call, since redis-py packs each call's arguments in Python and the fixed
cost of a call outweighs an item's. Each item is still fenced on its own inside
the script; batching changes the I/O, not the semantics. A caller about to send
a call of its own may take pending items along in it (``take_items``; fetch.lua
carries the completions waiting to go out) and settles them from its reply.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from typing import Any

from . import scripts as _scripts
from .commands import Commands
from .records import Gate, Lease, may_run

Call = tuple[_scripts.Script, list[str], list[Any]]

MAX_CALLS = 500  # script calls per pipeline
MAX_ITEMS = 200  # items per merged script call (bounds the script's run time)
# While items are held for a carrier (``hold_items``), none waits longer than
# this for one: a carrier that does not come (a fetch loop waiting on handlers
# that run long) must not delay the writes it would have carried.
HOLD_SECONDS = 0.002


@dataclasses.dataclass(slots=True, eq=False)
class Pending:
    script: _scripts.Script
    keys: list[str]  # shared keys (for an item), or all keys
    args: list[Any]
    item_keys: list[str] | None  # None: a plain call
    item_args: list[Any]
    future: asyncio.Future[Any]
    # An item of a run started early whose start is not confirmed yet: held
    # until its batch's gate settles (then sent, or answered None if refused).
    lease: Lease | None = None


def _merge(items: list[Pending]) -> Call:
    keys, args = list(items[0].keys), list(items[0].args)
    for item in items:
        keys += item.item_keys or ()
        args += item.item_args
    return items[0].script, keys, args


class ScriptBatcher:
    def __init__(self, commands: Commands, scripts: dict[str, _scripts.Script]) -> None:
        self._commands = commands
        self._scripts = scripts
        self._pending: list[Pending] = []
        self._busy = False  # a call or a flush is in flight
        self._holding = False  # items wait for a carrier (take_items)
        self._hold_timer: asyncio.TimerHandle | None = None
        # Items waiting for the start of their batch to be confirmed, by gate.
        self._gated: dict[Gate, list[Pending]] = {}

    async def call(
        self, script: _scripts.Script, keys: list[str], args: list[Any]
    ) -> Any:
        """Run one script call; raises what the call raised (error replies too)."""
        if not self._busy:
            return await self._inline(script, keys, args)
        pending = Pending(script, keys, args, None, [], self._future())
        self._pending.append(pending)
        return await pending.future

    def call_item(
        self,
        script: _scripts.Script,
        shared_keys: list[str],
        shared_args: list[Any],
        item_keys: list[str],
        item_args: list[Any],
        lease: Lease | None = None,
    ) -> Awaitable[Any]:
        """Run one item of a multi-item script; await it for the item's reply.
        (Not a coroutine itself: a queued item is its future, and a run's
        task resumes one coroutine fewer when the reply comes.)

        ``lease``: the item writes for this run, which may have been started
        early (records.Lease.ready): the item goes out only once that start is
        confirmed, and is answered None (nothing sent) if it was refused. One
        wait per batch of early starts, instead of one per run before calling."""
        gate = None if lease is None or may_run(lease) is not None else lease.ready
        if gate is None and not self._busy and not self._holding:
            return self._inline_item(
                script, shared_keys + item_keys, shared_args + item_args
            )
        pending = Pending(
            script, shared_keys, shared_args, item_keys, item_args, self._future()
        )
        if gate is not None:
            pending.lease = lease
            gated = self._gated.get(gate)
            if gated is None:
                gated = self._gated[gate] = []
                gate.add_done_callback(self._gate_settled)
            gated.append(pending)
            return pending.future
        self._hold_or_flush(queued=False)
        self._pending.append(pending)
        return pending.future

    async def _inline_item(
        self, script: _scripts.Script, keys: list[str], args: list[Any]
    ) -> Any:
        reply = await self._inline(script, keys, args)
        return reply[0]

    def _gate_settled(self, gate: Gate) -> None:
        """A batch's start is confirmed: its items that may write go out (as
        items queued now would); the others are answered None."""
        released = False
        for pending in self._gated.pop(gate, ()):
            assert pending.lease is not None
            if may_run(pending.lease):
                self._pending.append(pending)
                released = True
            elif not pending.future.done():
                pending.future.set_result(None)
        if released:
            self._hold_or_flush(queued=True)

    def _hold_or_flush(self, *, queued: bool) -> None:
        """Items were queued (or are about to be): while held for a carrier, no
        longer than HOLD_SECONDS; else out with the flush in flight or now."""
        if self._holding:
            if self._hold_timer is None and not self._busy:
                self._hold_timer = asyncio.get_running_loop().call_later(
                    HOLD_SECONDS, self._hold_expired
                )
        elif queued:
            self._flush_if_idle()

    def hold_items(self, on: bool) -> None:
        """While on, items are not sent at once: they wait up to HOLD_SECONDS
        for a call of someone else's to carry them (``take_items``), or go out
        with the next flush. Off: what is held goes out now."""
        self._holding = on
        if not on:
            self._flush_if_idle()

    def _hold_expired(self) -> None:
        self._hold_timer = None
        self._flush_if_idle()

    def requeue(self, items: list[Pending]) -> None:
        """Queue again items taken out by ``take_items``, to be sent now."""
        if not items:
            return  # nothing to send (and what is held stays held)
        self._pending.extend(items)
        self._flush_if_idle()

    def take_items(
        self, script: _scripts.Script, shared_keys: list[str], shared_args: list[Any]
    ) -> list[Pending]:
        """Take out up to MAX_ITEMS pending items of ``script`` with this shared
        part, for a call of the caller's own; it must settle each one
        (``resolve_items``, ``fail_items``)."""
        taken: list[Pending] = []
        if not self._pending:
            return taken
        kept: list[Pending] = []
        for p in self._pending:
            if (
                len(taken) < MAX_ITEMS
                and p.item_keys is not None
                and p.script is script
                and p.keys is shared_keys
                and p.args is shared_args
            ):
                taken.append(p)
            else:
                kept.append(p)
        self._pending = kept
        return taken

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _inline(
        self, script: _scripts.Script, keys: list[str], args: list[Any]
    ) -> Any:
        # Nothing in flight: send it now, from this task (no future, no task).
        self._busy = True
        try:
            return await _scripts.call(
                self._commands, self._scripts, script, keys, args
            )
        finally:
            self._busy = False
            self._flush_if_idle()

    def _flush_if_idle(self) -> None:
        """Send what is pending, unless a call or flush in flight will."""
        if self._pending and not self._busy:
            self._start_flusher()

    def _start_flusher(self) -> None:
        # A task of its own: a caller cancelled mid-flush must not strand the
        # other calls of its batch.
        self._busy = True
        asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                pending, self._pending = self._pending, []
                await self._send(pending)
        finally:
            self._busy = False

    async def _send(self, pending: list[Pending]) -> None:
        calls: list[Call] = []
        owners: list[list[Pending]] = []  # the pendings each call answers
        # Items merge when their shared parts are the same lists (finish.py
        # makes one per queue and consumer, and keeps it): equal lists made
        # apart go out as calls of their own, which is as correct. Every
        # pending item is alive here, so no two different lists share an id.
        groups: dict[tuple[str, int, int], list[Pending]] = {}
        for p in pending:
            if p.item_keys is None:
                calls.append((p.script, p.keys, p.args))
                owners.append([p])
            else:
                groups.setdefault((p.script.name, id(p.keys), id(p.args)), []).append(p)
        for items in groups.values():
            for start in range(0, len(items), MAX_ITEMS):
                chunk = items[start : start + MAX_ITEMS]
                calls.append(_merge(chunk))
                owners.append(chunk)
        for start in range(0, len(calls), MAX_CALLS):
            await self._pipeline(
                calls[start : start + MAX_CALLS], owners[start : start + MAX_CALLS]
            )

    async def _pipeline(self, calls: list[Call], owners: list[list[Pending]]) -> None:
        try:
            results = await _scripts.call_many(self._commands, self._scripts, calls)
        except Exception as exc:  # the connection failed: every call of the batch did
            for group in owners:
                fail_items(group, exc)
            return
        except BaseException as exc:  # the flusher itself was cancelled
            for group in owners:
                fail_items(group, asyncio.CancelledError(str(exc)))
            raise
        for group, result in zip(owners, results, strict=True):
            if isinstance(result, Exception):
                fail_items(group, result)
            elif group[0].item_keys is None:
                _resolve(group[0], result)
            else:
                resolve_items(group, result)


def resolve_items(items: list[Pending], results: list[Any]) -> None:
    """Answer each item with its own reply of a merged call."""
    for pending, result in zip(items, results, strict=True):
        _resolve(pending, result)


def _resolve(pending: Pending, result: Any) -> None:
    if not pending.future.done():  # else its caller was cancelled
        pending.future.set_result(result)


def fail_items(group: list[Pending], exc: BaseException) -> None:
    """Answer each item with the error of the call that carried it."""
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(exc)
