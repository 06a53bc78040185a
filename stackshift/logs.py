"""Logging: the loggers stackshift's modules write to, and the set-up of the
``stackshift`` command.

The library itself never calls ``structlog.configure()``: an app embedding
stackshift keeps its own set-up. Until structlog is configured, its defaults
print every level to stdout, debug included; stackshift's own loggers
(``get_logger``) then let only warnings and errors through, so that an app
that never set up logging is not flooded with a library's debug lines.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

# Without a structlog configuration, lines below this level are dropped.
UNCONFIGURED_LEVEL = logging.WARNING


def get_logger(name: str) -> FilteringBoundLogger:
    """The logger a stackshift module writes to (``get_logger("stackshift.worker")``).

    Whether structlog is configured is checked at each call, not at import:
    apps configure structlog after importing their libraries. Once it is
    configured, the app's processors, level and output apply in full.
    """
    return LibraryLogger(name, {})


class LibraryLogger:
    """A structlog logger that drops debug and info lines while structlog is not
    configured, and otherwise hands every call to structlog as configured then.

    Bound values are kept here and given to a lazy structlog proxy, so that a
    logger bound before the app configured structlog still follows that
    configuration when it logs.
    """

    __slots__ = ("_name", "_proxy", "_values")

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self._name = name
        self._values = values
        # A lazy proxy: it builds a bound logger from the configuration of
        # the moment at each call (or caches one, if the app says so).
        self._proxy: Any = structlog.get_logger(name, **values)

    def __repr__(self) -> str:
        return f"LibraryLogger({self._name!r}, {self._values!r})"

    @property
    def _context(self) -> dict[str, Any]:
        return self._values

    def bind(self, **new_values: Any) -> LibraryLogger:
        return LibraryLogger(self._name, {**self._values, **new_values})

    def unbind(self, *keys: str) -> LibraryLogger:
        values = dict(self._values)
        for key in keys:
            del values[key]  # KeyError, as structlog's unbind
        return LibraryLogger(self._name, values)

    def try_unbind(self, *keys: str) -> LibraryLogger:
        values = {k: v for k, v in self._values.items() if k not in keys}
        return LibraryLogger(self._name, values)

    def new(self, **new_values: Any) -> LibraryLogger:
        return LibraryLogger(self._name, new_values)

    def is_enabled_for(self, level: int) -> bool:
        if not structlog.is_configured():
            return level >= UNCONFIGURED_LEVEL
        check = getattr(self._proxy.bind(), "is_enabled_for", None)
        return True if check is None else bool(check(level))

    def get_effective_level(self) -> int:
        if not structlog.is_configured():
            return UNCONFIGURED_LEVEL
        level = getattr(self._proxy.bind(), "get_effective_level", None)
        return logging.NOTSET if level is None else int(level())

    def log(self, level: int, event: str, *args: Any, **kw: Any) -> Any:
        if level < UNCONFIGURED_LEVEL and not structlog.is_configured():
            return None
        return self._proxy.log(level, event, *args, **kw)

    async def alog(self, level: int, event: str, *args: Any, **kw: Any) -> Any:
        if level < UNCONFIGURED_LEVEL and not structlog.is_configured():
            return None
        return await self._proxy.alog(level, event, *args, **kw)

    # Below warning: dropped while structlog is not configured.

    def debug(self, event: str, *args: Any, **kw: Any) -> Any:
        if structlog.is_configured():
            return self._proxy.debug(event, *args, **kw)
        return None

    async def adebug(self, event: str, *args: Any, **kw: Any) -> Any:
        if structlog.is_configured():
            return await self._proxy.adebug(event, *args, **kw)
        return None

    def info(self, event: str, *args: Any, **kw: Any) -> Any:
        if structlog.is_configured():
            return self._proxy.info(event, *args, **kw)
        return None

    async def ainfo(self, event: str, *args: Any, **kw: Any) -> Any:
        if structlog.is_configured():
            return await self._proxy.ainfo(event, *args, **kw)
        return None

    def msg(self, event: str, *args: Any, **kw: Any) -> Any:
        if structlog.is_configured():
            return self._proxy.msg(event, *args, **kw)
        return None

    async def amsg(self, event: str, *args: Any, **kw: Any) -> Any:
        if structlog.is_configured():
            return await self._proxy.amsg(event, *args, **kw)
        return None

    # Warning and above: always passed on (with plain tracebacks while
    # structlog is not configured: its default renderer, with rich installed,
    # would print each frame's local variables, payloads and secrets included).

    def warning(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._proxy.warning(event, *args, **_plain(kw))

    async def awarning(self, event: str, *args: Any, **kw: Any) -> Any:
        return await self._proxy.awarning(event, *args, **_plain(kw))

    def warn(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._proxy.warning(event, *args, **_plain(kw))

    async def awarn(self, event: str, *args: Any, **kw: Any) -> Any:
        return await self._proxy.awarning(event, *args, **_plain(kw))

    def error(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._proxy.error(event, *args, **_plain(kw))

    async def aerror(self, event: str, *args: Any, **kw: Any) -> Any:
        return await self._proxy.aerror(event, *args, **_plain(kw))

    def err(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._proxy.error(event, *args, **_plain(kw))

    def exception(self, event: str, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._proxy.error(event, *args, **_plain(kw))

    async def aexception(self, event: str, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return await self._proxy.aerror(event, *args, **_plain(kw))

    def critical(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._proxy.critical(event, *args, **_plain(kw))

    async def acritical(self, event: str, *args: Any, **kw: Any) -> Any:
        return await self._proxy.acritical(event, *args, **_plain(kw))

    def fatal(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._proxy.critical(event, *args, **_plain(kw))

    async def afatal(self, event: str, *args: Any, **kw: Any) -> Any:
        return await self._proxy.acritical(event, *args, **_plain(kw))


def _plain(kw: dict[str, Any]) -> dict[str, Any]:
    """While structlog is not configured, an exception as plain traceback text
    (``exception=``) instead of ``exc_info`` for its default renderer."""
    exc_info = kw.get("exc_info")
    if not exc_info or structlog.is_configured():
        return kw
    kw = dict(kw)
    del kw["exc_info"]
    if isinstance(exc_info, BaseException):
        kw["exception"] = "".join(traceback.format_exception(exc_info))
    else:
        kw["exception"] = traceback.format_exc()
    return kw


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    """JSON lines when stdout is not a terminal (or ``json=True``), else readable
    colourless-by-default console lines. Every run's lines carry run_id, job,
    queue, attempt and correlation_id (bound by the runner as contextvars)."""
    if json is None:
        json = not sys.stdout.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # One write per line, newline included (PrintLogger's print() writes
        # the line and its newline apart): under PYTHONUNBUFFERED, as container
        # images often set it, the workers of `--processes N` share stdout, and
        # two lines written at once came out run together.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
