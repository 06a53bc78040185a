"""stackshift: durable background jobs for Python services, on Redis Streams."""

from .app import Stackshift
from .context import JobContext
from .errors import (
    ConfigError,
    InvalidNameError,
    JobFailed,
    JobTimeoutError,
    NonRetriableError,
    PayloadError,
    StackshiftError,
    StoreError,
    UnknownJobError,
)
from .job import Job
from .queue import Queue, RunHandle
from .serialization import (
    AttemptInfo,
    ErrorInfo,
    EventReceipt,
    ReceivedEvent,
    RunInfo,
    RunStatus,
    StepInfo,
    WaitInfo,
)
from .worker import Worker

__all__ = [
    "AttemptInfo",
    "ConfigError",
    "ErrorInfo",
    "EventReceipt",
    "InvalidNameError",
    "Job",
    "JobContext",
    "JobFailed",
    "JobTimeoutError",
    "NonRetriableError",
    "PayloadError",
    "Queue",
    "ReceivedEvent",
    "RunHandle",
    "RunInfo",
    "RunStatus",
    "Stackshift",
    "StackshiftError",
    "StepInfo",
    "StoreError",
    "UnknownJobError",
    "WaitInfo",
    "Worker",
]
