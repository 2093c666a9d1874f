"""Errors the store raises: one class per problem a caller can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class UnknownJobError(StoreError, KeyError):
    """A job id that is not in the job database."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"unknown job id {job_id}")
        self.job_id = job_id

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class UnknownShardError(StoreError, KeyError):
    """A shard id that is not in the job database, or that belongs to another job."""

    def __str__(self) -> str:
        return self.args[0]


class UnknownRunError(StoreError, KeyError):
    """Records given for a run id that does not belong to the shard's job."""

    def __str__(self) -> str:
        return self.args[0]


class JobStateError(StoreError):
    """An action the job's current status does not allow (e.g. starting a shard of a cancelled job)."""


class RecordSchemaError(StoreError, ValueError):
    """An engine table whose columns do not match schema.records."""


class WriteRefusedError(StoreError, PermissionError):
    """A statement given to the read function that is not a single read."""


class QueryTimeoutError(StoreError, TimeoutError):
    """A read query that ran past its time limit and was interrupted."""


class RowLimitError(StoreError):
    """A read query whose result has more rows than the caller's max_rows."""


class WriteConflictError(StoreError):
    """A lake transaction that still conflicted after every retry."""


class ObjectStoreError(StoreError):
    """An s3:// data path the store cannot use: unreachable endpoint, wrong credentials, missing bucket."""


class StoreOpenError(StoreError):
    """A store that cannot be opened: its catalog is unreadable, or its files are not where they are expected."""


class ResultSizeError(StoreError):
    """A read query whose result is larger (in bytes) than the caller's max_bytes."""


class MemoryLimitError(StoreError, MemoryError):
    """A read query that needed more memory than the read processes' limit (SAEGAP_READ_MEMORY_LIMIT)."""


class ReadProcessError(StoreError):
    """A read process that could not start, or that ended while running a query."""
