"""How commands print: JSON lines with ``--json``; rich tables and progress
bars when stdout is a terminal; plain aligned text otherwise (pipes, files,
tests). Every value from Redis is printed with its control characters escaped,
and never read as rich markup."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import msgspec

from .. import durations
from ..errors import StackshiftError

if TYPE_CHECKING:
    from rich.console import Console

EMPTY = "-"  # a table cell with nothing to show
_HAS_RICH = importlib.util.find_spec("rich") is not None


class Output:
    """Where a command's results go, in the form ``--json`` and the terminal ask for."""

    def __init__(self, *, json: bool, stream: TextIO | None = None) -> None:
        self.json = json
        self.stream = stream or sys.stdout
        # rich draws for a person at a terminal; without it, plain text there too.
        self.terminal = not json and _isatty(self.stream) and _HAS_RICH
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console  # only for a person at a terminal

            self._console = Console(
                file=self.stream, markup=False, highlight=False, emoji=False
            )
        return self._console

    def records(self, values: Iterable[Any]) -> None:
        """One JSON object per line (msgspec Structs, dicts, lists)."""
        buffer = getattr(self.stream, "buffer", None)
        for value in values:
            line = msgspec.json.encode(value) + b"\n"
            if buffer is None:
                self.stream.write(line.decode())
            else:  # bytes as encoded: UTF-8 whatever the locale
                self.stream.flush()
                buffer.write(line)
        self.stream.flush()

    def lines(self, lines: Iterable[str]) -> None:
        """Text for a person, a line at a time."""
        for line in lines:
            print(printable(line), file=self.stream)
        self.stream.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        numeric: Iterable[str] = (),
    ) -> None:
        """A table: rich at a terminal, else aligned columns separated by two
        spaces (numbers right-aligned; cells never hold spaces, so ``split()``
        reads them back)."""
        right = frozenset(numeric)
        if self.terminal:
            self._rich_table(columns, rows, right)
            return
        cells = [list(columns), *([printable(c) for c in row] for row in rows)]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        self.lines(
            "  ".join(
                cell.rjust(width) if name in right else cell.ljust(width)
                for name, cell, width in zip(columns, line, widths, strict=True)
            ).rstrip()
            for line in cells
        )

    def _rich_table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        right: frozenset[str],
    ) -> None:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAVY, header_style="bold")
        for name in columns:
            table.add_column(name, justify="right" if name in right else "left")
        for row in rows:
            table.add_row(*(Text(printable(cell)) for cell in row))
        self.console.print(table)

    @contextlib.contextmanager
    def progress(self, total: int, what: str) -> Iterator[Callable[[int], None]]:
        """A progress bar of ``total`` items at a terminal (gone when done);
        nothing elsewhere. Yields ``advance(n)``."""
        if not self.terminal:
            yield lambda n: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(printable(what), total=total)
            yield lambda n: bar.advance(task, n)


async def confirm(question: str, *, yes: bool) -> None:
    """Ask ``question`` on the terminal (stderr, then stdin) unless ``--yes``.

    Raises:
        StackshiftError: not confirmed: stdin is not a terminal to ask on, or
            the answer was not yes.
    """
    if yes:
        return
    if sys.stdin is None or not _isatty(sys.stdin):
        raise StackshiftError(
            f"{question} not confirmed: stdin is not a terminal to ask on; "
            "pass --yes to do it"
        )
    print(f"{printable(question)} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = await anyio.to_thread.run_sync(sys.stdin.readline)
    if answer.strip().lower() not in ("y", "yes"):
        raise StackshiftError("not confirmed: nothing was done")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def printable(text: str) -> str:
    """Control characters from stored text (an error message, a payload) are
    shown escaped, not sent to the terminal."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def when(value: datetime | None) -> str:
    """A time as UTC ISO 8601 to the millisecond, or ``-``."""
    if value is None:
        return EMPTY
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_SPAN: dict[durations.Unit, str] = {
    "ms": "{count:.0f}ms",
    "s": "{count:.2f}s",
    "m": "{count:.0f}m{rest:02d}s",
    "h": "{count:.0f}h{rest:02d}m",
    "d": "{count:.0f}d{rest:02d}h",
}


def span(seconds: float) -> str:
    """A duration, as short as it reads well: ``4ms``, ``2.35s``, ``3m05s``,
    ``2h10m``, ``3d04h``."""
    return durations.written(max(0.0, seconds), _SPAN)


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
