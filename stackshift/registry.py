"""Job definitions: ``JobSpec`` and the name -> handler table."""

from __future__ import annotations

import dataclasses
import inspect
import random
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from .config import Duration, to_seconds
from .cron import CronSchedule
from .errors import ConfigError, UnknownJobError
from .store.keys import check_name

Handler = Callable[[Any], Awaitable[Any]]
BackoffPolicy = Callable[[int], float]

BACKOFF_INITIAL = 1.0
BACKOFF_CAP = 300.0


def exponential_backoff(
    initial: float = BACKOFF_INITIAL, cap: float = BACKOFF_CAP
) -> BackoffPolicy:
    """Doubling from ``initial`` up to ``cap``, with jitter (50-100 % of the step),
    so that runs that failed together do not retry together."""

    def delay(failures: int) -> float:
        step = min(cap, initial * 2 ** max(0, failures - 1))
        return float(step * (0.5 + random.random() / 2))

    return delay


def make_backoff(backoff: Duration | Callable[[int], Duration] | None) -> BackoffPolicy:
    """``None``: the default; a duration: the first delay, doubling; a callable:
    failures so far (from 1) -> delay, used as given."""
    if backoff is None:
        return exponential_backoff()
    if callable(backoff):
        user = backoff
        return lambda failures: to_seconds(user(failures), name="backoff")
    return exponential_backoff(initial=to_seconds(backoff, name="backoff"))


@dataclasses.dataclass(frozen=True, slots=True)
class JobSpec:
    """A registered job: its name, handler and policies."""

    name: str
    handler: Handler
    payload_type: Any  # typing.Any: a plain JSON value (dict) is passed
    retries: int
    backoff: BackoffPolicy
    timeout: float | None
    queue: str | None = (
        None  # where its runs go unless told (Job.enqueue, events, crons)
    )
    return_type: Any = Any  # what results decode into (RunHandle, step.invoke)
    on_event: tuple[str, ...] = ()  # event names that each make a run of it
    cron: CronSchedule | None = None  # makes one run per tick (app.cron)


def handler_types(handler: Handler) -> tuple[Any, Any]:
    """(``T`` from the handler's ``ctx: JobContext[T]`` annotation, else
    ``Any``; its return annotation, else ``Any``)."""
    from .context import JobContext

    params = list(inspect.signature(handler).parameters.values())
    if not params:
        raise ConfigError(f"job handler {handler!r} must take one argument, ctx")
    try:
        hints = typing.get_type_hints(handler)
    except Exception as exc:
        raise ConfigError(
            f"cannot resolve the annotations of {handler!r}: {exc}"
        ) from exc
    annotation = hints.get(params[0].name)
    payload: Any = Any
    if typing.get_origin(annotation) is JobContext:
        (payload,) = typing.get_args(annotation)
    return payload, hints.get("return", Any)


def payload_type_of(handler: Handler) -> Any:
    """``T`` from the handler's ``ctx: JobContext[T]`` annotation, else ``Any``."""
    return handler_types(handler)[0]


class Registry:
    """Job name -> ``JobSpec``."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobSpec] = {}

    def add(self, spec: JobSpec) -> None:
        if (
            spec.name in self._jobs
            and self._jobs[spec.name].handler is not spec.handler
        ):
            raise ConfigError(f"job {spec.name!r} is already registered")
        self._jobs[spec.name] = spec

    def replace(self, spec: JobSpec) -> None:
        """Put ``spec`` in place of the registered job of its name."""
        self._jobs[spec.name] = spec

    def get(self, name: str) -> JobSpec:
        spec = self._jobs.get(name)
        if spec is None:
            raise UnknownJobError(
                f"no job named {name!r} is registered in this worker's app "
                f"(registered: {', '.join(sorted(self._jobs)) or 'none'})"
            )
        return spec

    def find(self, name: str) -> JobSpec | None:
        return self._jobs.get(name)

    def names(self) -> list[str]:
        return sorted(self._jobs)

    def specs(self) -> list[JobSpec]:
        return [self._jobs[name] for name in sorted(self._jobs)]

    def crons(self) -> list[JobSpec]:
        """The jobs with a cron schedule."""
        return [spec for spec in self.specs() if spec.cron is not None]

    def subscriptions(self) -> dict[str, list[tuple[str, str]]]:
        """Event name -> [(job, queue)] of the jobs with ``on_event``."""
        subs: dict[str, list[tuple[str, str]]] = {}
        for spec in self.specs():
            for event in spec.on_event:
                subs.setdefault(event, []).append((spec.name, spec.queue or "default"))
        return subs


def build_spec(
    name: str,
    handler: Handler,
    *,
    payload: Any,
    retries: int,
    backoff: Duration | Callable[[int], Duration] | None,
    timeout: float | None,
    queue: str | None = None,
    on_event: str | tuple[str, ...] | list[str] = (),
    cron: CronSchedule | None = None,
) -> JobSpec:
    check_name(name, "job")
    if not inspect.iscoroutinefunction(handler):
        raise ConfigError(f"job {name!r}: the handler must be an async function")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError(f"job {name!r}: retries must be an int >= 0, got {retries!r}")
    if queue is not None:
        check_name(queue, "queue")
    events = (on_event,) if isinstance(on_event, str) else tuple(on_event)
    for event in events:
        check_name(event, "event")
    payload_type, return_type = handler_types(handler)
    if payload is not None:
        payload_type = payload
    return JobSpec(
        name,
        handler,
        payload_type,
        retries,
        make_backoff(backoff),
        timeout,
        queue=queue,
        return_type=return_type,
        on_event=events,
        cron=cron,
    )
