"""Cron (issue 11, DESIGN §2), with worker processes: one run per tick however
many workers serve the schedule's queue, one run for the latest tick missed
during downtime (and a count of the missed ones), and a slow run that does not
hold the schedule back. What ran is read from the effects ledger."""

from __future__ import annotations

from collections import Counter
from typing import Any

from stackshift import Stackshift
from tests.support import ledger
from tests.support.processes import Workers, runs_of
from tests.support.processes import workers as workers  # the fixture
from tests.support.waiting import wait_until

CRONS = "tests.apps.crons:app"
SECOND = 1000


def ticks(workers: Workers, event: str = "tick") -> list[dict[str, Any]]:
    return ledger.select(ledger.read(workers.ledger), event=event)


def assert_contiguous(tick_times: list[int]) -> None:
    gaps = [b - a for a, b in zip(tick_times, tick_times[1:], strict=False)]
    assert all(g == SECOND for g in gaps), f"ticks not one second apart: {gaps}"


async def server_ms(app: Stackshift) -> int:
    seconds, micros = await app.store.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_three_workers_make_exactly_one_run_per_tick(
    app: Stackshift, workers: Workers
) -> None:
    procs = [workers.start(f"w{i}", queues=("crons",), app=CRONS) for i in range(3)]
    for proc in procs:
        await proc.wait_ready()
    await wait_until(lambda: len(ticks(workers)) >= 10, timeout=30, message="ten ticks")
    for proc in procs:
        proc.terminate()
    for proc in procs:
        assert await proc.wait_exit() == 0
    lines = ticks(workers)
    per_tick = Counter(line["tick"] for line in lines)
    assert all(n == 1 for n in per_tick.values()), per_tick
    run_ids = [line["run_id"] for line in lines]
    assert len(set(run_ids)) == len(run_ids)
    tick_times = sorted(per_tick)
    assert_contiguous(tick_times)
    assert all(t % SECOND == 0 for t in tick_times)
    assert all(line["missed"] == 0 for line in lines)
    runs = await runs_of(app, run_ids)
    assert all(r.status == "completed" and r.attempt == 1 for r in runs)
    assert sorted(r.result for r in runs) == tick_times
    state = await app.store.cron_state("crons", "every-second")
    assert int(state["last"]) == tick_times[-1]
    assert state.get("missed", "0") == "0"


async def test_after_downtime_one_run_is_made_for_the_latest_missed_tick(
    app: Stackshift, workers: Workers
) -> None:
    first = workers.start("before", queues=("crons",), app=CRONS)
    await first.wait_ready()
    await wait_until(lambda: len(ticks(workers)) >= 2, timeout=20, message="ticks")
    first.terminate()
    assert await first.wait_exit() == 0
    last = max(line["tick"] for line in ticks(workers))
    # No worker for more than three ticks.
    await wait_until(
        lambda: _later_than(app, last + 3 * SECOND + 500),
        timeout=10,
        message="three ticks to pass",
    )
    count_before = len(ticks(workers))
    second = workers.start("after", queues=("crons",), app=CRONS)
    await second.wait_ready()
    await wait_until(
        lambda: len(ticks(workers)) >= count_before + 2, timeout=20, message="ticks"
    )
    second.terminate()
    assert await second.wait_exit() == 0
    after = sorted(
        (line for line in ticks(workers) if line["tick"] > last),
        key=lambda line: line["tick"],
    )
    # Three ticks came while no worker ran: one run, for the latest of them
    # (or a later one), and the ones skipped before it are counted.
    caught_up = after[0]
    assert caught_up["tick"] >= last + 3 * SECOND, (last, caught_up)
    missed = (caught_up["tick"] - last) // SECOND - 1
    assert caught_up["missed"] == missed >= 2
    assert all(line["missed"] == 0 for line in after[1:])
    assert_contiguous([line["tick"] for line in after])
    state = await app.store.cron_state("crons", "every-second")
    assert int(state["missed"]) == missed
    assert second.logged("cron_ticks_missed", missed=missed)


async def _later_than(app: Stackshift, ms: int) -> bool:
    return await server_ms(app) > ms


async def test_a_run_slower_than_the_schedule_does_not_hold_back_the_next_tick(
    app: Stackshift, workers: Workers
) -> None:
    proc = workers.start("slow", queues=("crons-slow",), app=CRONS, concurrency=8)
    await proc.wait_ready()
    await wait_until(
        lambda: len(ticks(workers, "end")) >= 2, timeout=30, message="two runs ended"
    )
    proc.terminate()
    assert await proc.wait_exit() == 0
    starts = sorted(ticks(workers, "start"), key=lambda line: line["tick"])
    ends = {line["tick"]: line for line in ticks(workers, "end")}
    assert len(starts) >= 4  # ticks went on while the first runs were busy
    assert_contiguous([line["tick"] for line in starts])
    first = starts[0]["tick"]
    # The tick after the first began before the first run ended.
    started_during = [line for line in starts if first < line["tick"] < first + 2000]
    assert started_during and first in ends
    assert all(Counter(line["tick"] for line in starts)[t] == 1 for t in ends)
