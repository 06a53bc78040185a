"""Pages whose data calls the store does not have yet render them once they
exist: a DashboardData whose missing calls return fixed values (the dashboard's
own boundary; the store and Redis under it are real)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from stackshift import RunInfo, Stackshift
from stackshift.dashboard import DashboardData, create_app
from stackshift.dashboard.data import (
    Attempt,
    CounterValue,
    CronInfo,
    EventInfo,
    MinuteCount,
    RunPage,
    Suspension,
)
from tests.dashboard.conftest import QUEUES, csrf_token
from tests.dashboard.jobs import Upstream, register_jobs
from tests.support.workers import running_worker

T0 = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
HOSTILE = "<script>window.__pwned=1</script>"


class Complete(DashboardData):
    """Every call the store lacks today, answered with fixed values."""

    def __init__(self, app: Stackshift, runs: list[RunInfo]) -> None:
        super().__init__(app, queues=QUEUES)
        self.runs = runs
        self.cancelled: list[str] = []
        self.retried_all: list[str] = []

    async def throughput(self, queue: str, *, minutes: int = 15) -> list[MinuteCount]:
        return [
            MinuteCount(T0 + timedelta(minutes=i), completed=i, failed=i % 2)
            for i in range(minutes)
        ]

    async def oldest_queued_age(self, queue: str) -> timedelta | None:
        return timedelta(seconds=95)

    async def list_runs(self, queue: str, **filters: object) -> RunPage:
        return RunPage(self.runs, next_cursor="page-2")

    async def find_by_idempotency_key(self, queue: str, key: str) -> RunInfo | None:
        return self.runs[0]

    async def find_by_correlation_id(
        self, correlation_id: str, *, limit: int = 50
    ) -> list[RunInfo]:
        return self.runs

    async def attempts(self, run: RunInfo) -> list[Attempt]:
        return [
            Attempt(
                1, T0, T0 + timedelta(seconds=2), "retried", "w-1", "IOError", HOSTILE
            ),
            Attempt(2, T0 + timedelta(seconds=5), None, "running", "w-2"),
        ]

    async def suspension(self, run: RunInfo) -> Suspension | None:
        return Suspension("event", "await-refund", T0, event="refund.issued",
                          match={"paymentId": HOSTILE})  # fmt: skip

    async def child_runs(self, run: RunInfo) -> list[RunInfo]:
        return self.runs

    async def run_counters(self, run: RunInfo) -> list[CounterValue]:
        return [CounterValue("files:f_1:rows", 1200)]

    async def retry_all_dead(self, queue: str) -> int:
        self.retried_all.append(queue)
        return 4

    async def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)

    async def counters(self, *, limit: int = 100) -> list[CounterValue]:
        return [CounterValue(HOSTILE, 3)]

    async def recent_events(self, *, limit: int = 50) -> list[EventInfo]:
        return [EventInfo("evt_1", "payment.confirmed", T0, {"paymentId": HOSTILE},
                          [r.run_id for r in self.runs])]  # fmt: skip

    async def crons(self) -> list[CronInfo]:
        return [CronInfo("nightly-report", "0 3 * * *", "dash", "steps", T0,
                         T0 - timedelta(days=1), self.runs[0].run_id, 2)]  # fmt: skip


async def test_the_later_data_calls_slot_into_their_pages(app: Stackshift) -> None:
    register_jobs(app, Upstream())
    async with running_worker(app, ["dash"]):
        handle = await app.queue("dash").enqueue("steps", {"name": "n"})
        await handle.result(timeout=10)
    run = await app.get_run(handle.run_id)
    assert run is not None
    data = Complete(app, [run])
    asgi = create_app(app, data=data)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="http://dash"
    ) as web:
        queues = (await web.get("/")).text
        # 105 completed and 7 failed over 15 minutes, on each of the two queues
        assert queues.count("7.5 runs/min finished") == len(QUEUES)
        assert queues.count('<rect class="ok"') == 15 * len(QUEUES)
        assert "1 min 35 s" in queues  # the oldest queued run's age
        assert "Not available yet" not in queues

        runs = (await web.get("/runs?queue=dash&status=completed")).text
        assert run.run_id in runs and "cursor=page-2" in runs
        found = (
            await web.get("/runs", params={"by": "idempotency_key", "find": "k"})
        ).text
        assert run.run_id in found

        page = (await web.get(f"/runs/{run.run_id}")).text
        assert "refund.issued" in page and "await-refund" in page
        assert "w-2" in page and "files:f_1:rows" in page and "1200" in page
        assert HOSTILE not in page and "&lt;script&gt;" in page
        assert "Not available yet" not in page

        for path, text in [("/events", "payment.confirmed"), ("/crons", "nightly-report"),
                           ("/counters", "&lt;script&gt;")]:  # fmt: skip
            body = (await web.get(path)).text
            assert (
                text in body and HOSTILE not in body and "Not available yet" not in body
            )

        token = await csrf_token(web)
        cancelled = await web.post(
            f"/runs/{run.run_id}/cancel", data={"csrf_token": token}
        )
        assert cancelled.headers["location"] == f"/runs/{run.run_id}?done=cancelled"
        assert data.cancelled == [run.run_id]
        retried = await web.post(
            "/dead/retry-all", data={"csrf_token": token, "queue": "dash"}
        )
        assert retried.headers["location"] == "/dead?queue=dash&done=retried_all&n=4"
        assert data.retried_all == ["dash"]
        shown = (await web.get(retried.headers["location"])).text
        assert "Re-drove 4 dead-lettered runs." in shown
