"""``stackshift queues``, ``runs`` and ``show``, run as a user runs them, on
runs in every status made by a real app on the real Redis."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from stackshift import JobContext, NonRetriableError, Stackshift
from tests.integration.test_cli import STACKSHIFT, one_line_error, run_cli

QUEUE = "ops"


def count_rows(n: int) -> int:
    return n * 10


def register_jobs(app: Stackshift) -> None:
    """A parent that records a step and invokes a child, a run that waits for
    an event, and one that fails."""

    @app.job("parent", queue=QUEUE)
    async def parent(ctx: JobContext[dict[str, int]]) -> Any:
        rows = await ctx.step.run("count-rows", count_rows, ctx.payload["n"])
        return await ctx.step.invoke("double", "child", {"n": rows}, queue=QUEUE)

    @app.job("child", queue=QUEUE)
    async def child(ctx: JobContext[dict[str, int]]) -> int:
        return ctx.payload["n"] * 2

    @app.job("waiter", queue=QUEUE)
    async def waiter(ctx: JobContext[Any]) -> Any:
        return await ctx.step.wait_for_event(
            "await-refund", "refund.issued", match={"paymentId": "p1"}, timeout=3600
        )

    @app.job("broken", queue=QUEUE, retries=0)
    async def broken(ctx: JobContext[dict[str, str]]) -> None:
        raise NonRetriableError(ctx.payload["why"])


async def make_runs(app: Stackshift) -> dict[str, str]:
    """One run in each status but running and cancelled: their run ids by name."""
    register_jobs(app)
    q = app.queue(QUEUE)
    ids = {
        "parent": (await q.enqueue("parent", {"n": 2})).run_id,
        "waiter": (await q.enqueue("waiter", {})).run_id,
        "broken": (await q.enqueue("broken", {"why": "refused\non purpose"})).run_id,
    }
    await app.run_until_idle([QUEUE])
    ids["queued"] = (await q.enqueue("child", {"n": 1})).run_id
    ids["scheduled"] = (await q.enqueue("child", {"n": 1}, delay=3600)).run_id
    parent = await app.get_run(ids["parent"])
    assert parent is not None and parent.status == "completed", parent
    assert parent.result == 40  # the child's result
    (child,) = [run async for run in app.runs(QUEUE, status="completed", job="child")]
    ids["child"] = child.run_id
    return ids


def cli_env(prefix: str) -> dict[str, str]:
    return {"STACKSHIFT_PREFIX": prefix}


def cli(redis_url: str, prefix: str, *args: str) -> str:
    """The command's stdout; it must succeed."""
    done = run_cli(*args, "--url", redis_url, env=cli_env(prefix))
    assert done.returncode == 0, (args, done.stderr)
    assert done.stderr.splitlines()[0] == f"reading {redis_url} prefix {prefix}"
    return done.stdout


def json_lines(redis_url: str, prefix: str, *args: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in cli(redis_url, prefix, *args, "--json").splitlines()]


def table(text: str) -> list[dict[str, str]]:
    """A plain table read back: one dict per row, by column name."""
    header, *rows = text.splitlines()
    return [dict(zip(header.split(), row.split(), strict=True)) for row in rows]


async def test_queues_lists_every_queue_with_its_runs_by_status(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    await make_runs(app)
    await app.queue("idle").enqueue("child", {"n": 1}, delay=60)
    (idle, ops) = json_lines(redis_url, prefix, "queues")
    assert ops["queue"] == QUEUE and idle["queue"] == "idle"  # sorted by name
    assert ops["runs"] == {"queued": 1, "scheduled": 1, "running": 0, "suspended": 1,
                           "completed": 2, "failed": 1, "cancelled": 0}  # fmt: skip
    assert ops["totals"]["enqueued"] == 6 and ops["consumers"] == 0
    assert idle["runs"]["scheduled"] == 1

    rows = table(cli(redis_url, prefix, "queues"))
    assert [row["queue"] for row in rows] == ["idle", QUEUE]
    assert rows[1] == {"queue": QUEUE, "queued": "1", "scheduled": "1", "running": "0",
                       "suspended": "1", "completed": "2", "failed": "1",
                       "cancelled": "0", "consumers": "0"}  # fmt: skip


def test_queues_at_an_unused_prefix_says_there_are_none(
    redis_url: str, prefix: str
) -> None:
    assert "no queues yet" in cli(redis_url, prefix, "queues")
    assert json_lines(redis_url, prefix, "queues") == []


async def test_runs_lists_a_queues_runs_filtered_by_status_and_job(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    ids = await make_runs(app)
    listed = json_lines(redis_url, prefix, "runs", QUEUE)
    # In flight and waiting first, then ended runs, newest first.
    assert [run["run_id"] for run in listed] == [
        ids["queued"], ids["waiter"], ids["scheduled"],  # running, queued, ... first
        ids["parent"], ids["child"], ids["broken"],  # completed, then failed
    ]  # fmt: skip
    assert listed[0]["job"] == "child" and listed[0]["payload"] == {"n": 1}

    completed = json_lines(redis_url, prefix, "runs", QUEUE, "--status", "completed")
    assert {run["run_id"] for run in completed} == {ids["child"], ids["parent"]}
    of_job = json_lines(redis_url, prefix, "runs", QUEUE, "--job", "child")
    assert [run["run_id"] for run in of_job] == [
        ids["queued"], ids["scheduled"], ids["child"]
    ]  # fmt: skip
    assert len(json_lines(redis_url, prefix, "runs", QUEUE, "--limit", "2")) == 2

    rows = {row["run_id"]: row for row in table(cli(redis_url, prefix, "runs", QUEUE))}
    broken, waiter = rows[ids["broken"]], rows[ids["waiter"]]
    assert (broken["job"], broken["status"], broken["attempt"]) == (
        "broken",
        "failed",
        "1",
    )
    assert broken["error"] == "NonRetriableError"
    assert waiter["status"] == "suspended" and waiter["error"] == "-"
    # When a waiting run wakes: the wait's timeout, an hour from now.
    wakes = datetime.fromisoformat(waiter["finished/wakes"])
    assert timedelta(minutes=59) < wakes - datetime.now(UTC) < timedelta(minutes=61)
    assert rows[ids["queued"]]["finished/wakes"] == "-"
    assert "no failed runs of job child" in cli(
        redis_url, prefix, "runs", QUEUE, "--status", "failed", "--job", "child"
    )


def test_runs_refuses_a_bad_status_or_queue_name(redis_url: str, prefix: str) -> None:
    bad_status = run_cli("runs", QUEUE, "--status", "done", "--url", redis_url)
    assert bad_status.returncode == 2 and "invalid choice: 'done'" in bad_status.stderr
    bad_queue = run_cli("runs", "no spaces", "--url", redis_url, env=cli_env(prefix))
    assert "invalid queue name 'no spaces'" in one_line_error(bad_queue)
    assert bad_queue.returncode == 2


def waterfall(lines: list[str]) -> list[tuple[float, str, str]]:
    """The timeline rows of ``show``: (offset in ms, bar, record)."""
    rows = []
    for line in lines:
        found = re.match(r"^\s+\+(\S+)\s+(\S*)\s+(\|[ #]+\|)  (.*)$", line)
        if found:
            rows.append((_ms(found.group(1)), found.group(3), found.group(4)))
    return rows


UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _ms(text: str) -> float:
    """``4ms``, ``2.35s``, ``3m05s``, ``1h00m``, ``2d03h`` in milliseconds."""
    parts = re.findall(r"([\d.]+)(ms|s|m|h|d)", text)
    assert "".join(n + unit for n, unit in parts) == text, text
    return sum(float(n) * UNITS_MS[unit] for n, unit in parts)


async def test_show_draws_the_step_timeline_and_names_the_child_runs(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    ids = await make_runs(app)
    lines = cli(redis_url, prefix, "show", ids["parent"]).splitlines()
    rows = waterfall(lines)
    records = [record for _offset, _bar, record in rows]
    assert records[-1] == "finished  completed", lines
    assert "count-rows  attempt 1  -> 20" in records, lines
    (invoked,) = [r for r in records if r.startswith("double  attempt 1  (invoke)")]
    assert ids["child"] in invoked
    offsets = [offset for offset, _bar, _record in rows]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    # Each bar has the same width, and the last one reaches its right end.
    assert len({len(bar) for _o, bar, _r in rows}) == 1 and rows[-1][1].endswith("#|")
    assert f"child run       {ids['child']}  child  completed" in lines, lines

    (shown,) = json_lines(redis_url, prefix, "show", ids["parent"])
    assert shown["child_runs"] == [
        {"run_id": ids["child"], "job": "child", "status": "completed"}
    ]
    assert [step["step_id"] for step in shown["steps"]] == ["count-rows", "double"]
    (child,) = json_lines(redis_url, prefix, "show", ids["child"])
    assert child["parent_run_id"] == ids["parent"] and child["child_runs"] == []


async def test_show_says_what_a_suspended_run_waits_for_and_until_when(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    ids = await make_runs(app)
    lines = cli(redis_url, prefix, "show", ids["waiter"]).splitlines()
    (waits,) = [line for line in lines if line.startswith("waits for")]
    found = re.match(
        r'^waits for +await-refund: event refund\.issued where \{"paymentId":"p1"\}, '
        r"until (\S+)$",
        waits,
    )
    assert found, waits
    until = datetime.fromisoformat(found.group(1))
    assert timedelta(minutes=59) < until - datetime.now(UTC) < timedelta(minutes=61)
    assert f"wakes_at        {found.group(1)}" in lines
    last = waterfall(lines)[-1]
    assert last[2] == "wakes, unless what it waits for comes first"
    assert last[0] > 3_500_000  # an hour on, in ms


async def test_show_prints_the_error_and_its_traceback_as_lines(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    ids = await make_runs(app)
    lines = cli(redis_url, prefix, "show", ids["broken"]).splitlines()
    at = lines.index("error")
    assert not [line for line in lines[at:] if "\\n" in line]  # lines, not JSON
    assert lines[at + 1 : at + 3] == ["  NonRetriableError: refused", "    on purpose"]
    assert lines[at + 3] == "    | Traceback (most recent call last):"
    assert '    |     raise NonRetriableError(ctx.payload["why"])' in lines
    queued = cli(redis_url, prefix, "show", ids["queued"]).splitlines()
    assert "status          queued" in queued and queued[-1] == "steps           0"


def run_at_terminal(
    *args: str, env: dict[str, str], typed: str = ""
) -> tuple[int, str, str]:
    """Run ``stackshift`` with stdin and stdout on a pseudo-terminal (160
    columns), as a person at a shell does, typing ``typed``. Returns the exit
    status, what the terminal showed and stderr."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [*STACKSHIFT, *args],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            "TERM": "xterm-256color",
            "COLUMNS": "160",
            "PYTHONIOENCODING": "utf-8",
            **env,
        },  # fmt: skip
    )
    os.close(terminal)
    if typed:
        os.write(main, typed.encode())
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    status = proc.wait(timeout=30)
    assert proc.stderr is not None
    errors = proc.stderr.read().decode()
    proc.stderr.close()
    return status, shown.decode(errors="replace"), errors


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def test_at_a_terminal_the_tables_are_drawn_with_rich(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    await make_runs(app)
    status, shown, _ = run_at_terminal(
        "queues", "--url", redis_url, env=cli_env(prefix)
    )
    assert status == 0
    shown = ANSI.sub("", shown)  # styles: the bold header
    header = next(line for line in shown.splitlines() if "queue" in line)
    assert header.split() == ["queue", "queued", "scheduled", "running", "suspended",
                              "completed", "failed", "cancelled", "consumers"]  # fmt: skip
    assert "━━━" in shown  # rich's rule under the header, not plain text
    status, shown, _ = run_at_terminal(
        "runs", QUEUE, "--url", redis_url, env=cli_env(prefix)
    )
    assert status == 0 and "━━━" in shown and "NonRetriableError" in shown


async def test_show_lists_the_failed_attempts_and_the_counters_a_run_touched(
    app: Stackshift, redis_url: str, prefix: str
) -> None:
    @app.job("flaky", queue="cli", retries=2, backoff=0.01)
    async def flaky(ctx: JobContext[Any]) -> int:
        await ctx.state.increment("imports:rows", 3)
        if ctx.attempt < 3:
            raise RuntimeError(f"try {ctx.attempt} went wrong")
        return ctx.attempt

    handle = await app.queue("cli").enqueue("flaky", {})
    await app.run_until_idle(["cli"])
    assert await handle.result(timeout=10) == 3
    lines = cli(redis_url, prefix, "show", handle.run_id).splitlines()
    failed = [line.split(None, 1)[1] for line in lines if line.startswith("failed ")]
    assert len(failed) == 2
    for n, line in enumerate(failed, 1):
        assert line.startswith(f"attempt {n}  ")
        assert line.endswith(f"RuntimeError: try {n} went wrong")
    assert ["counters", "imports:rows"] in [line.split() for line in lines]
    # A pipe closed early (| head) ends the command quietly.
    head = await anyio.run_process(
        f"{' '.join(STACKSHIFT)} show {handle.run_id} | head -1",
        env=os.environ | cli_env(prefix) | {"STACKSHIFT_REDIS_URL": redis_url},
        check=False,
    )
    assert b"Error" not in head.stderr, head.stderr
