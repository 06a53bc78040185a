"""Helpers for testing jobs.

Run jobs in a test with no worker process: ``await app.run_until_idle(queues)``
runs every due run of those queues in the test's own event loop (delays,
retry backoffs and sleeps due at once), on ``memory://`` or a real Redis.

Start each test from an empty ``memory://``: point the app at ``memory://``
(``STACKSHIFT_REDIS_URL=memory://`` before the app module is imported, or
``Stackshift("memory://")``) and call ``reset_memory()`` before each test. Each
event loop the app is used from opens its own connections, so a test with a
loop of its own (pytest-asyncio's default) sees the emptied server.
"""

from __future__ import annotations

from .store.memory import reset_memory

__all__ = ["reset_memory"]
