"""Job definitions: ``JobSpec`` and the name -> handler table."""

from __future__ import annotations

import dataclasses
import inspect
import random
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from .config import Duration, to_seconds
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


def payload_type_of(handler: Handler) -> Any:
    """``T`` from the handler's ``ctx: JobContext[T]`` annotation, else ``Any``."""
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
    if typing.get_origin(annotation) is JobContext:
        (arg,) = typing.get_args(annotation)
        return arg
    return Any


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


def build_spec(
    name: str,
    handler: Handler,
    *,
    payload: Any,
    retries: int,
    backoff: Duration | Callable[[int], Duration] | None,
    timeout: float | None,
) -> JobSpec:
    check_name(name, "job")
    if not inspect.iscoroutinefunction(handler):
        raise ConfigError(f"job {name!r}: the handler must be an async function")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError(f"job {name!r}: retries must be an int >= 0, got {retries!r}")
    payload_type = payload if payload is not None else payload_type_of(handler)
    return JobSpec(name, handler, payload_type, retries, make_backoff(backoff), timeout)
