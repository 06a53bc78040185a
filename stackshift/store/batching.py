"""Group commit for script calls.

Callers queue a script call and await its reply; one flusher sends every call
that piled up while the previous flush was in flight as one pipeline. Idle, a
call goes out at once, from the caller's task (no added latency); under load,
the calls of many concurrent runs share round trips.

Multi-item scripts (complete.lua) go further: concurrent items with the same
script and shared part (e.g. every completion on one queue) are merged into one
script call, since redis-py packs each call's arguments in Python and the fixed
cost of a call outweighs an item's. Each item is still fenced on its own inside
the script; batching changes the I/O, not the semantics.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from . import scripts as _scripts

Call = tuple[_scripts.Script, list[str], list[Any]]

MAX_CALLS = 500  # script calls per pipeline
MAX_ITEMS = 200  # items per merged script call (bounds the script's run time)


@dataclasses.dataclass(slots=True, eq=False)
class _Pending:
    script: _scripts.Script
    keys: list[str]  # shared keys (for an item), or all keys
    args: list[Any]
    item_keys: list[str] | None  # None: a plain call
    item_args: list[Any]
    future: asyncio.Future[Any]


def _merge(items: list[_Pending]) -> Call:
    keys, args = list(items[0].keys), list(items[0].args)
    for item in items:
        keys += item.item_keys or ()
        args += item.item_args
    return items[0].script, keys, args


class ScriptBatcher:
    def __init__(self, client: Any, scripts: dict[str, _scripts.Script]) -> None:
        self._client = client
        self._scripts = scripts
        self._pending: list[_Pending] = []
        self._busy = False  # a call or a flush is in flight

    async def call(
        self, script: _scripts.Script, keys: list[str], args: list[Any]
    ) -> Any:
        """Run one script call; raises what the call raised (error replies too)."""
        if not self._busy:
            return await self._inline(script, keys, args)
        return await self._queue(_Pending(script, keys, args, None, [], self._future()))

    async def call_item(
        self,
        script: _scripts.Script,
        shared_keys: list[str],
        shared_args: list[Any],
        item_keys: list[str],
        item_args: list[Any],
    ) -> Any:
        """Run one item of a multi-item script; returns the item's reply."""
        if not self._busy:
            reply = await self._inline(
                script, shared_keys + item_keys, shared_args + item_args
            )
            return reply[0]
        pending = _Pending(
            script, shared_keys, shared_args, item_keys, item_args, self._future()
        )
        return await self._queue(pending)

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _inline(
        self, script: _scripts.Script, keys: list[str], args: list[Any]
    ) -> Any:
        # Nothing in flight: send it now, from this task (no future, no task).
        self._busy = True
        try:
            return await _scripts.call(self._client, self._scripts, script, keys, args)
        finally:
            self._busy = False
            if self._pending:
                self._start_flusher()

    async def _queue(self, pending: _Pending) -> Any:
        self._pending.append(pending)
        return await pending.future

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

    async def _send(self, pending: list[_Pending]) -> None:
        calls: list[Call] = []
        owners: list[list[_Pending]] = []  # the pendings each call answers
        groups: dict[tuple[str, tuple[str, ...], tuple[Any, ...]], list[_Pending]] = {}
        for p in pending:
            if p.item_keys is None:
                calls.append((p.script, p.keys, p.args))
                owners.append([p])
            else:
                groups.setdefault(
                    (p.script.name, tuple(p.keys), tuple(p.args)), []
                ).append(p)
        for items in groups.values():
            for start in range(0, len(items), MAX_ITEMS):
                chunk = items[start : start + MAX_ITEMS]
                calls.append(_merge(chunk))
                owners.append(chunk)
        for start in range(0, len(calls), MAX_CALLS):
            await self._pipeline(
                calls[start : start + MAX_CALLS], owners[start : start + MAX_CALLS]
            )

    async def _pipeline(self, calls: list[Call], owners: list[list[_Pending]]) -> None:
        try:
            results = await _scripts.call_many(self._client, self._scripts, calls)
        except Exception as exc:  # the connection failed: every call of the batch did
            for group in owners:
                _fail(group, exc)
            return
        except BaseException as exc:  # the flusher itself was cancelled
            for group in owners:
                _fail(group, asyncio.CancelledError(str(exc)))
            raise
        for group, result in zip(owners, results, strict=True):
            if isinstance(result, Exception):
                _fail(group, result)
            elif group[0].item_keys is None:
                _resolve(group[0], result)
            else:
                for pending, item_result in zip(group, result, strict=True):
                    _resolve(pending, item_result)


def _resolve(pending: _Pending, result: Any) -> None:
    if not pending.future.done():  # else its caller was cancelled
        pending.future.set_result(result)


def _fail(group: list[_Pending], exc: BaseException) -> None:
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(exc)
