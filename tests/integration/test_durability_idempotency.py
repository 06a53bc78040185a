"""One idempotency key makes one run (DESIGN §4.4, research T10), however many
enqueues race: from one process with asyncio.gather, and from several processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from stackshift import Stackshift
from tests.support.processes import Workers, runs_of
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until


async def run_keys(app: Stackshift, queue: str) -> list[bytes]:
    pattern = f"{app.settings.prefix}{{{queue}}}:run:*"
    return [key async for key in app.store.client.scan_iter(match=pattern)]


async def test_fifty_concurrent_enqueues_with_one_key_make_one_run(
    app: Stackshift, workers: Workers
) -> None:
    queue = app.queue("idem")
    handles = await asyncio.gather(
        *(
            queue.enqueue("echo", {"n": n}, idempotency_key="signup:user_42")
            for n in range(50)
        )
    )
    assert len({h.run_id for h in handles}) == 1
    assert [h.deduplicated for h in handles].count(False) == 1
    assert len(await run_keys(app, "idem")) == 1
    stream = f"{app.settings.prefix}{{idem}}:stream"
    assert await app.store.client.xlen(stream) == 1

    drain = workers.start("drain", queues=("idem",), burst=True)
    assert await drain.wait_exit() == 0, drain.tail()
    (run,) = await runs_of(app, [handles[0].run_id])
    assert run.status == "completed" and run.attempt == 1
    assert len(drain.logged("run_finished")) == 1  # it ran once
    (first,) = [h for h in handles if not h.deduplicated]
    assert run.result == run.payload  # the payload of the one enqueue that won
    assert run.idempotency_key == "signup:user_42"

    again = await queue.enqueue("echo", {"n": 99}, idempotency_key="signup:user_42")
    assert (again.run_id, again.deduplicated) == (first.run_id, True)


async def test_enqueues_racing_from_several_processes_make_one_run(
    app: Stackshift, workers: Workers, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    enqueuers = [
        workers.start_module(
            f"enqueuer-{i}",
            "tests.apps.enqueue_burst",
            "idem",
            "order:7",
            "25",
            str(go),
        )
        for i in range(4)
    ]
    for enqueuer in enqueuers:
        await wait_until(
            lambda e=enqueuer: any("ready" in line for line in e.events()),
            timeout=30,
            message=f"{enqueuer.name} to connect\n{enqueuer.tail()}",
        )
    go.touch()  # they all start enqueueing now
    for enqueuer in enqueuers:
        assert await enqueuer.wait_exit() == 0, enqueuer.tail()
    replies = [
        line
        for enqueuer in enqueuers
        for line in enqueuer.events()
        if "deduplicated" in line
    ]
    assert len(replies) == 100
    assert len({r["run_id"] for r in replies}) == 1
    assert [r["deduplicated"] for r in replies].count(False) == 1
    assert len(await run_keys(app, "idem")) == 1
    stream = f"{app.settings.prefix}{{idem}}:stream"
    assert await app.store.client.xlen(stream) == 1
