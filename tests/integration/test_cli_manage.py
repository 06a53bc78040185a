"""``stackshift retry``, ``cancel`` and ``release-key``, run as a user runs
them: bulk changes ask first, refuse without ``--yes`` when nobody can answer,
and report each run's status."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from stackshift import JobContext, NonRetriableError, Stackshift
from stackshift.cli import main
from tests.integration.test_cli import DOWN, NEVER_MADE, one_line_error, run_cli
from tests.integration.test_cli_runs import ANSI, run_at_terminal

QUEUE = "ops"


async def served_queue(app: Stackshift) -> None:
    """The jobs, and a queue a worker has served once."""
    register_jobs(app)
    await app.run_until_idle([QUEUE])


def register_jobs(app: Stackshift) -> None:
    @app.job("fails", queue=QUEUE, retries=0)
    async def fails(ctx: JobContext[Any]) -> None:
        raise NonRetriableError("failed on purpose")

    @app.job("works", queue=QUEUE)
    async def works(ctx: JobContext[Any]) -> str:
        return "done"


async def dead_runs(app: Stackshift, count: int) -> list[str]:
    register_jobs(app)
    handles = await app.queue(QUEUE).enqueue_many("fails", [{}] * count)
    await app.run_until_idle([QUEUE])
    return [h.run_id for h in handles]


def cli(redis_url: str, prefix: str, *args: str) -> tuple[int, str, list[str]]:
    """(exit status, stdout, stderr lines but the ``reading`` line)."""
    done = run_cli(*args, "--url", redis_url, env={"STACKSHIFT_PREFIX": prefix})
    assert done.stderr.startswith(f"reading {redis_url} prefix {prefix}\n"), done.stderr
    return done.returncode, done.stdout, done.stderr.splitlines()[1:]


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


async def statuses(app: Stackshift, run_ids: list[str]) -> list[str]:
    runs = [await app.get_run(run_id) for run_id in run_ids]
    return [run.status.value if run else "missing" for run in runs]


async def test_retry_all_dead_asks_first_then_re_drives_each_dead_run(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    failed = await dead_runs(app, 3)
    # stdin is not a terminal (no --yes): nothing is done, exit 2.
    done = run_cli("retry", "--all-dead", QUEUE, "--url", redis_url,
                   env={"STACKSHIFT_PREFIX": prefix})  # fmt: skip
    line = one_line_error(done)
    assert done.returncode == 2
    assert line == (
        f"stackshift: retry 3 dead runs of queue {QUEUE}? not confirmed: stdin "
        "is not a terminal to ask on; pass --yes to do it"
    )
    assert await statuses(app, failed) == ["failed"] * 3

    status, out, errors = cli(redis_url, prefix, "retry", "--all-dead", QUEUE, "--yes", "--json")  # fmt: skip
    assert (status, errors) == (0, [])
    assert sorted(records(out), key=lambda r: r["run_id"]) == [
        {"run_id": run_id, "status": "queued"} for run_id in sorted(failed)
    ]
    assert await statuses(app, failed) == ["queued"] * 3

    await app.run_until_idle([QUEUE])  # they fail again
    status, out, _ = cli(redis_url, prefix, "retry", "--all-dead", QUEUE, "-y")
    assert (status, out) == (0, f"retried 3 dead runs of queue {QUEUE}\n")
    assert await statuses(app, failed) == ["queued"] * 3
    status, out, _ = cli(redis_url, prefix, "retry", "--all-dead", QUEUE, "-y")
    assert (status, out) == (0, f"queue {QUEUE}: no dead runs\n")


async def test_retry_one_run_prints_its_new_status(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    (run_id,) = await dead_runs(app, 1)
    status, out, _ = cli(redis_url, prefix, "retry", run_id, "--json")
    assert (status, records(out)) == (0, [{"run_id": run_id, "status": "queued"}])
    status, _, errors = cli(redis_url, prefix, "retry", run_id)
    assert status == 2 and errors == [
        f"stackshift: run {run_id} is queued, not failed: nothing to retry"
    ]


async def test_at_a_terminal_a_bulk_change_asks_and_shows_its_progress(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    failed = await dead_runs(app, 2)
    env = {"STACKSHIFT_PREFIX": prefix}
    args = ("retry", "--all-dead", QUEUE, "--url", redis_url)
    status, shown, errors = run_at_terminal(*args, env=env, typed="n\n")
    assert status == 2 and f"retry 2 dead runs of queue {QUEUE}? [y/N]" in errors
    assert "stackshift: not confirmed: nothing was done" in errors
    assert await statuses(app, failed) == ["failed"] * 2

    status, shown, errors = run_at_terminal(*args, env=env, typed="y\n")
    assert status == 0, errors
    assert f"retried 2 dead runs of queue {QUEUE}" in ANSI.sub("", shown)
    assert f"retrying {QUEUE}" in shown  # the progress bar's label, drawn then cleared
    assert await statuses(app, failed) == ["queued"] * 2


async def test_cancel_by_id_prints_each_runs_status_after_it(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    register_jobs(app)
    q = app.queue(QUEUE)
    ended = (await q.enqueue("works", {})).run_id
    await app.run_until_idle([QUEUE])  # completed
    queued = (await q.enqueue("works", {})).run_id
    scheduled = (await q.enqueue("works", {}, delay=3600)).run_id
    status, out, errors = cli(redis_url, prefix, "cancel", queued, scheduled, ended, NEVER_MADE)  # fmt: skip
    assert status == 2  # one of them could not be cancelled
    assert out.splitlines() == [
        f"{queued}  cancelled",
        f"{scheduled}  cancelled",
        f"{ended}  completed: it had already ended, nothing changed",
    ]
    assert errors == [
        f"stackshift: run {NEVER_MADE} does not exist (or its record expired)"
    ]
    assert await statuses(app, [queued, scheduled, ended]) == [
        "cancelled", "cancelled", "completed"
    ]  # fmt: skip

    status, out, errors = cli(
        redis_url, prefix, "cancel", queued, "not-a-run", "--json"
    )
    assert status == 2 and errors == []  # with --json, the errors are in the lines
    assert records(out) == [
        {"run_id": queued, "status": "cancelled"},
        {"run_id": "not-a-run", "status": None, "error": "invalid run id 'not-a-run'"},
    ]


async def test_cancel_a_queues_runs_in_a_status_asks_then_cancels_only_those(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    await served_queue(app)
    q = app.queue(QUEUE)
    queued = [h.run_id for h in await q.enqueue_many("works", [{}] * 3)]
    (failing,) = [h.run_id for h in await q.enqueue_many("fails", [{}])]
    later = (await q.enqueue("works", {}, delay=3600)).run_id
    bulk = ("cancel", "--queue", QUEUE, "--status", "queued")

    refused = run_cli(*bulk, "--url", redis_url, env={"STACKSHIFT_PREFIX": prefix})
    assert refused.returncode == 2
    assert one_line_error(refused).startswith(
        f"stackshift: cancel 4 queued runs of queue {QUEUE}? not confirmed"
    )
    status, out, _ = cli(redis_url, prefix, *bulk, "--job", "works", "--yes", "--json")
    assert status == 0
    assert sorted(r["run_id"] for r in records(out)) == sorted(queued)
    assert {r["status"] for r in records(out)} == {"cancelled"}
    assert await statuses(app, [*queued, failing, later]) == [
        "cancelled", "cancelled", "cancelled", "queued", "scheduled"
    ]  # fmt: skip

    status, out, _ = cli(redis_url, prefix, "cancel", "--queue", QUEUE, "--status", "scheduled", "--yes")  # fmt: skip
    assert (status, out) == (0, f"cancelled 1 run (scheduled) of queue {QUEUE}\n")
    status, out, _ = cli(redis_url, prefix, "cancel", "--queue", QUEUE, "--status", "suspended", "--yes")  # fmt: skip
    assert (status, out) == (0, f"queue {QUEUE}: no suspended runs\n")
    assert await statuses(app, [failing, later]) == ["queued", "cancelled"]


async def test_cancel_a_queued_run_of_a_queue_no_worker_has_served_yet(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    run_id = (await app.queue(QUEUE).enqueue("works", {})).run_id
    status, out, errors = cli(redis_url, prefix, "cancel", run_id)
    assert (status, out, errors) == (0, f"{run_id}  cancelled\n", [])


async def test_release_key_lets_the_next_enqueue_make_a_new_run(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    first = await app.queue(QUEUE).enqueue("works", {}, idempotency_key="order:1")
    status, out, _ = cli(redis_url, prefix, "release-key", QUEUE, "order:1", "--json")
    assert (status, records(out)) == (
        0, [{"queue": QUEUE, "key": "order:1", "released": True}]
    )  # fmt: skip
    status, out, _ = cli(redis_url, prefix, "release-key", QUEUE, "order:1")
    assert status == 0 and re.match(r"^idempotency key 'order:1' .* was not held", out)
    again = await app.queue(QUEUE).enqueue("works", {}, idempotency_key="order:1")
    assert again.run_id != first.run_id and not again.deduplicated


def test_bad_combinations_of_arguments_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused by the parser, before any connection (so in-process is enough)."""
    for args, says in [
        (["retry"], "give a RUN_ID or --all-dead QUEUE"),
        (["retry", NEVER_MADE, "--all-dead", "q"], "give a RUN_ID or --all-dead QUEUE"),
        (["cancel"], "give RUN_IDs, or --queue QUEUE --status STATUS"),
        (["cancel", "--queue", "q"], "--queue needs --status"),
        (["cancel", NEVER_MADE, "--job", "j"], "--status and --job go with --queue"),
        (["cancel", "--queue", "q", "--status", "running"], "invalid choice: 'running'"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exited:
            main([*args, "--url", DOWN])
        errors = capsys.readouterr().err
        assert exited.value.code == 2 and says in errors, (args, errors)
        assert "reading" not in errors


def test_with_redis_down_each_command_is_one_line_and_exit_1() -> None:
    for args in (["queues"], ["cancel", NEVER_MADE], ["retry", "--all-dead", "q", "--yes"],
                 ["cancel", "--queue", "q", "--status", "queued", "--yes"]):  # fmt: skip
        done = run_cli(*args, "--url", DOWN)
        assert "127.0.0.1:1" in one_line_error(done), args
        assert done.returncode == 1, args
