"""``Job[P, R]``: what ``@app.job`` returns. Still callable as the handler;
``enqueue`` takes a payload of the handler's type ``P`` (checked by mypy, and
validated at run time) and returns a ``RunHandle[R]`` whose result decodes into
the handler's return type."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from .config import Duration
from .context import JobContext
from .queue import RunHandle
from .registry import JobSpec

if TYPE_CHECKING:
    from .app import Stackshift

P = TypeVar("P")
R = TypeVar("R")


class Job(Generic[P, R]):
    """A registered job: ``await job.enqueue(payload)``, or call it as its handler."""

    def __init__(
        self,
        app: Stackshift,
        name: str,
        handler: Callable[[JobContext[P]], Awaitable[R]],
    ) -> None:
        self._app = app
        self.name = name
        self._handler = handler
        functools.update_wrapper(self, handler)

    def __repr__(self) -> str:
        return f"Job({self.name!r}, queue={self.queue!r})"

    async def __call__(self, ctx: JobContext[P]) -> R:
        return await self._handler(ctx)

    @property
    def handler(self) -> Callable[[JobContext[P]], Awaitable[R]]:
        """The function it was made from (registering a Job in another app
        registers this)."""
        return self._handler

    @property
    def spec(self) -> JobSpec:
        return self._app.registry.get(self.name)

    @property
    def queue(self) -> str:
        """Where ``enqueue`` sends runs unless told: the job's ``queue=``, else
        "default"."""
        return self.spec.queue or "default"

    async def enqueue(
        self,
        payload: P,
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        delay: Duration | None = None,
        run_at: datetime | float | None = None,
        queue: str | None = None,
    ) -> RunHandle[R]:
        """Enqueue a run of this job (see ``Queue.enqueue``); ``queue``
        overrides the job's own."""
        return await self._app.queue(queue or self.queue).enqueue(
            self.name,
            payload,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            delay=delay,
            run_at=run_at,
        )

    def enqueue_sync(
        self,
        payload: P,
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        delay: Duration | None = None,
        run_at: datetime | float | None = None,
        queue: str | None = None,
    ) -> RunHandle[R]:
        """``enqueue()`` for code without an event loop (Flask, Django, scripts)."""
        return self._app.queue(queue or self.queue).enqueue_sync(
            self.name,
            payload,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            delay=delay,
            run_at=run_at,
        )

    async def enqueue_many(
        self,
        payloads: Iterable[P],
        *,
        delay: Duration | None = None,
        queue: str | None = None,
    ) -> list[RunHandle[R]]:
        """Enqueue one run per payload (see ``Queue.enqueue_many``)."""
        return await self._app.queue(queue or self.queue).enqueue_many(
            self.name, payloads, delay=delay
        )

    def enqueue_many_sync(
        self,
        payloads: Iterable[P],
        *,
        delay: Duration | None = None,
        queue: str | None = None,
    ) -> list[RunHandle[R]]:
        return self._app.queue(queue or self.queue).enqueue_many_sync(
            self.name, payloads, delay=delay
        )
