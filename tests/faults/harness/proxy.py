"""A fault proxy between Redis clients and a redis-server.

Runs its own asyncio loop in a thread, so that it keeps forwarding while the
test's code blocks. Modes:

- ``pass``: forward both ways.
- ``blackhole``: accept and read, forward nothing (connections hang).
- ``reset``: refuse service: new and existing connections are reset.
- execute-then-drop (``arm_drop``): the next command matching a pattern is
  forwarded and executed by Redis; its reply is not forwarded, the client's
  connection is reset instead (Temporal's ExecuteAndTimeout).

Client commands and server replies are parsed as RESP (2 and 3), so a reply
is matched to its command even when commands are pipelined. A connection that
subscribes (pub/sub) is passed through unparsed from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
import threading
from collections.abc import Callable

Pattern = tuple[bytes, ...]


class Incomplete(Exception):
    pass


def parse_value(buf: bytes, pos: int) -> tuple[object, int]:
    """Parse one RESP value at ``pos``; return (value, next position)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    kind, line = buf[pos : pos + 1], buf[pos + 1 : end]
    nxt = end + 2
    if kind in (b"+", b"-", b":", b"_", b",", b"#", b"("):
        return (kind, line), nxt
    if kind in (b"$", b"=", b"!"):
        n = int(line)
        if n < 0:
            return None, nxt
        if len(buf) < nxt + n + 2:
            raise Incomplete
        return buf[nxt : nxt + n], nxt + n + 2
    if kind in (b"*", b"~", b">", b"%", b"|"):
        n = int(line)
        if n < 0:
            return None, nxt
        count = n * 2 if kind in (b"%", b"|") else n
        items = []
        for _ in range(count):
            item, nxt = parse_value(buf, nxt)
            items.append(item)
        if kind == b"|":  # attribute: the real value follows
            return parse_value(buf, nxt)
        return (kind, items), nxt
    raise ValueError(f"not RESP: {buf[pos : pos + 20]!r}")


def command_words(value: object) -> list[bytes]:
    if isinstance(value, tuple) and value[0] == b"*":
        return [w for w in value[1] if isinstance(w, bytes)]
    return []


def is_null_reply(value: object) -> bool:
    return value is None or (isinstance(value, tuple) and value[0] == b"_")


@dataclasses.dataclass
class DropRule:
    pattern: Pattern
    remaining: int
    skip_null: bool  # do not drop a null reply (an XREADGROUP that timed out)
    fired: int = 0


class FaultProxy:
    """``FaultProxy(upstream_port).start()``; clients connect to ``.port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.port = 0
        self.commands = 0  # commands forwarded to Redis
        self.seen: list[list[bytes]] = []  # first two words of each command
        self._rules: list[DropRule] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = (
            set()
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        fut.result(10)
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- control (from the test's thread) --------------------------------

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "blackhole", "reset")
        self.mode = mode
        if mode == "reset":
            self._call(self._reset_all)

    def arm_drop(
        self, *pattern: bytes, times: int = 1, skip_null: bool = False
    ) -> DropRule:
        rule = DropRule(
            tuple(w.upper() if i == 0 else w for i, w in enumerate(pattern)),
            times,
            skip_null,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def disarm(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset_connections(self) -> None:
        self._call(self._reset_all)

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    # --- the proxy (in its own loop) ----------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        self._reset_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _reset_all(self) -> None:
        for client, upstream in list(self._conns):
            _rst(client)
            if upstream is not None:
                _rst(upstream)
        self._conns.clear()

    def _match(self, words: list[bytes]) -> DropRule | None:
        if not words:
            return None
        head = [words[0].upper(), *words[1:]]
        with self._lock:
            for rule in self._rules:
                if rule.remaining > 0 and all(
                    i < len(head) and head[i] == w for i, w in enumerate(rule.pattern)
                ):
                    return rule
        return None

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.mode == "reset":
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _rst(writer)
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        # Commands whose replies are due, in order; each with its drop rule.
        due: list[DropRule | None] = []
        raw_mode = [False]
        try:
            await asyncio.gather(
                self._client_to_server(reader, up_writer, due, raw_mode),
                self._server_to_client(up_reader, writer, due, raw_mode),
            )
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._conns.discard(pair)
            _rst(writer)
            _rst(up_writer)

    async def _read(self, reader: asyncio.StreamReader, closed: str) -> bytes:
        """The next chunk from one side, held back while the proxy black-holes."""
        data = await reader.read(65536)
        if not data:
            raise ConnectionError(closed)
        while self.mode == "blackhole":  # noqa: ASYNC110 (set from another thread)
            await asyncio.sleep(0.05)  # sync-ok: blackhole: hold traffic
        return data

    async def _client_to_server(
        self,
        reader: asyncio.StreamReader,
        up: asyncio.StreamWriter,
        due: list[DropRule | None],
        raw_mode: list[bool],
    ) -> None:
        buf = b""
        while True:
            data = await self._read(reader, "client closed")
            if raw_mode[0]:
                up.write(data)
                await up.drain()
                continue
            buf += data
            pos = 0
            while True:
                try:
                    value, nxt = parse_value(buf, pos)
                except Incomplete:
                    break
                words = command_words(value)
                self.commands += 1
                self.seen.append(words[:2])
                if words and words[0].upper() in (
                    b"SUBSCRIBE",
                    b"PSUBSCRIBE",
                    b"SSUBSCRIBE",
                ):
                    raw_mode[0] = True
                rule = self._match(words)
                if rule is not None:
                    with self._lock:
                        rule.remaining -= 1
                due.append(rule)
                pos = nxt
            up.write(buf[:pos])
            buf = buf[pos:]
            if raw_mode[0] and buf:
                up.write(buf)
                buf = b""
            await up.drain()

    async def _server_to_client(
        self,
        up: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        due: list[DropRule | None],
        raw_mode: list[bool],
    ) -> None:
        buf = b""
        while True:
            data = await self._read(up, "server closed")
            if raw_mode[0]:
                writer.write(buf + data)
                buf = b""
                await writer.drain()
                continue
            buf += data
            pos = 0
            while True:
                try:
                    value, nxt = parse_value(buf, pos)
                except Incomplete:
                    break
                rule = due.pop(0) if due else None  # else: an unsolicited push
                if rule is not None and not (rule.skip_null and is_null_reply(value)):
                    # Executed by Redis; the client never hears of it.
                    writer.write(buf[:pos])
                    await writer.drain()
                    with self._lock:
                        rule.fired += 1
                    raise ConnectionError("execute-then-drop")
                if rule is not None:
                    with self._lock:
                        rule.remaining += 1  # a null reply: try again on the next
                pos = nxt
            writer.write(buf[:pos])
            buf = buf[pos:]
            await writer.drain()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    writer.transport.abort()
