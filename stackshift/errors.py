"""Exceptions raised by stackshift.

::

    StackshiftError          base of everything stackshift raises
     +-- ConfigError         a bad setting or URL
     +-- InvalidNameError    a queue, job, step or key name that cannot be used
     +-- PayloadError        a payload or result that cannot be encoded, decoded,
     |                       validated, or is over the size limit
     +-- UnknownJobError     no handler is registered under that job name
     +-- StoreError          Redis failed or refused (connection lost, out of memory...)
     +-- JobFailed           raised by RunHandle.result(): the run was dead-lettered
     +-- NonRetriableError   raised by job code to fail the run at once
     +-- JobTimeoutError     an attempt ran past its job's timeout
"""

from __future__ import annotations


class StackshiftError(Exception):
    """Base class of every error stackshift raises."""


class ConfigError(StackshiftError):
    """A setting, URL or job definition that cannot be used."""


class InvalidNameError(StackshiftError, ValueError):
    """A queue, job, step, counter or idempotency key that cannot be used."""


class PayloadError(StackshiftError, ValueError):
    """A payload or result that cannot be encoded, decoded or validated."""


class UnknownJobError(StackshiftError, LookupError):
    """No handler is registered under this job name."""


class StoreError(StackshiftError):
    """Redis could not carry out an operation (connection, memory, permission)."""


class JobTimeoutError(StackshiftError, TimeoutError):
    """An attempt ran longer than its job's timeout."""


class NonRetriableError(StackshiftError):
    """Raise from job code to fail the run at once, without retries."""


class JobFailed(StackshiftError):
    """The run ended failed (dead-lettered); raised by ``RunHandle.result()``.

    Attributes:
        run_id: the failed run.
        error_type: the exception type name of its last attempt.
        message: the exception message of its last attempt.
    """

    def __init__(self, run_id: str, error_type: str, message: str) -> None:
        super().__init__(f"run {run_id} failed: {error_type}: {message}")
        self.run_id = run_id
        self.error_type = error_type
        self.message = message

    def __reduce__(self) -> tuple[type[JobFailed], tuple[str, str, str]]:
        return (type(self), (self.run_id, self.error_type, self.message))
