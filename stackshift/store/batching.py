"""Group commit for script calls.

Callers queue a script call and await its reply; one flusher sends every call
that piled up while the previous flush was in flight as one pipeline. Idle, a
call goes out at once (no added latency); under load, the completions,
checkpoints and enqueues of many concurrent runs share round trips. Each call
is still its own atomic script: batching changes the I/O, not the semantics.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import scripts as _scripts

Call = tuple[_scripts.Script, list[str], list[Any]]

MAX_BATCH = 500  # calls per pipeline


class ScriptBatcher:
    def __init__(self, client: Any, scripts: dict[str, _scripts.Script]) -> None:
        self._client = client
        self._scripts = scripts
        self._pending: list[tuple[Call, asyncio.Future[Any]]] = []
        self._busy = False  # a call or a flush is in flight

    async def call(
        self, script: _scripts.Script, keys: list[str], args: list[Any]
    ) -> Any:
        """Run one script call; raises what the call raised (error replies too)."""
        if not self._busy:
            # Nothing in flight: send it now, from this task (no future, no task).
            self._busy = True
            try:
                return await _scripts.call(
                    self._client, self._scripts, script, keys, args
                )
            finally:
                self._busy = False
                if self._pending:
                    self._start_flusher()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(((script, keys, args), future))
        return await future

    def _start_flusher(self) -> None:
        # A task of its own: a caller cancelled mid-flush must not strand the
        # other calls of its batch.
        self._busy = True
        asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._send(batch)
        finally:
            self._busy = False

    async def _send(self, batch: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                (script, keys, args), _ = batch[0]
                results = [
                    await _scripts.call(self._client, self._scripts, script, keys, args)
                ]
            else:
                results = await _scripts.call_many(
                    self._client, self._scripts, [call for call, _ in batch]
                )
        except Exception as exc:  # the connection failed: every call of the batch did
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException as exc:  # the flusher itself was cancelled
            for _, future in batch:
                if not future.done():
                    future.set_exception(asyncio.CancelledError(str(exc)))
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
