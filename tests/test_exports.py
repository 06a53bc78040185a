"""The public names: DESIGN.md's contract, and nothing private leaking."""

from __future__ import annotations

import stackshift


def test_contract_names_are_exported() -> None:
    for name in [
        "Stackshift",
        "JobContext",
        "NonRetriableError",
        "JobFailed",
        "RunInfo",
        "Job",  # DESIGN §6: @app.job returns a Job
        "Queue",
        "RunHandle",  # DESIGN §6: RunHandle[ImportResult]
        "RunStatus",
        "Worker",
    ]:
        assert name in stackshift.__all__
        assert getattr(stackshift, name) is not None


def test_all_is_sorted_and_complete() -> None:
    assert stackshift.__all__ == sorted(stackshift.__all__)
    public = {n for n in dir(stackshift) if not n.startswith("_")}
    # Submodules: attributes of the package once something has imported them.
    modules = {"app", "cli", "config", "context", "cron", "dashboard", "durations",
               "errors", "job", "logs", "observe", "queue", "registry", "serialization",
               "step", "store", "suspension", "sync", "testing", "tracing", "worker"}  # fmt: skip
    assert public - modules == set(stackshift.__all__)


def test_job_failed_carries_its_details_and_message() -> None:
    exc = stackshift.JobFailed("r1", "ValueError", "bad thing")
    assert (exc.run_id, exc.error_type, exc.message) == (
        "r1",
        "ValueError",
        "bad thing",
    )
    assert "bad thing" in str(exc)


def test_app_job_returns_the_exported_job_type() -> None:
    app = stackshift.Stackshift("memory://exports")

    @app.job("typed", queue="uploads")
    async def typed(ctx: stackshift.JobContext[dict[str, int]]) -> int:
        return ctx.payload["n"]

    assert isinstance(typed, stackshift.Job)
    assert typed.queue == "uploads"
