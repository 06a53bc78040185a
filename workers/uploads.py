"""File processing: download a CSV, parse it, import its rows batch by batch
and count them, then mark the file complete.

The row counter is exact across retries: an attempt that replays the loop
skips the increments an earlier attempt applied. ``import_rows`` itself is not
a step, so a retry imports the earlier batches again: it must be idempotent
(an upsert keyed by the row), as the documented flow assumes.

Enqueue::

    await app.queue("uploads").enqueue("processUpload", {"fileId": "f_1"})

Serve: ``stackshift worker workers.uploads:app --queue uploads``
"""

from __future__ import annotations

import msgspec

from stackshift import JobContext, Stackshift

from .services import download_file, import_rows, mark_file_complete, parse_csv

app = Stackshift()  # $STACKSHIFT_REDIS_URL, else redis://localhost:6379/0

QUEUE = "uploads"


class Upload(msgspec.Struct, rename="camel", frozen=True):
    file_id: str


def rows_counter(file_id: str) -> str:
    """The key of the counter of rows imported from ``file_id``, as the job
    below writes it (read it with ``await app.state.get(...)``)."""
    return f"files:{file_id}:rows"


@app.job("processUpload", queue=QUEUE)
async def process_upload(ctx: JobContext[Upload]) -> dict[str, int]:
    file = await ctx.step.run("download-file", download_file, ctx.payload.file_id)
    parsed = await ctx.step.run("parse-file", parse_csv, file)
    for batch in parsed.batches:
        await import_rows(batch)
        await ctx.state.increment(f"files:{ctx.payload.file_id}:rows", len(batch))
    await ctx.step.run("mark-complete", mark_file_complete, ctx.payload.file_id)
    return {"rows": parsed.total_rows}
