"""
pydantic models of the MKA1 Batch and Files API, and the status sets.

Liberal in what they accept: fields nobody has documented yet are kept (``extra="allow"``), optional
fields may be null, and a batch status this provider does not know is kept as its string, counts as not
terminal and is logged once. A newer API therefore never crashes an older provider.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)


class BatchStatus(StrEnum):
    """The documented states of a batch; the API may add more (see :attr:`Batch.status`)."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
"""A batch in one of these will not change any more."""

SUCCESS_STATUSES: frozenset[BatchStatus] = frozenset({BatchStatus.COMPLETED})
"""The only status that means the batch did its work (it may still hold failed lines)."""

NO_REATTACH_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLING, BatchStatus.CANCELLED}
)
"""A batch ending unsuccessfully: ``create_batch`` submits anew rather than reattach to it."""

_unknown_statuses_logged: set[str] = set()


def parse_status(value: Any) -> BatchStatus | str:
    """
    Return ``value`` as a :class:`BatchStatus`, or as its string if this provider does not know it.

    An unknown status is logged (once per value and process) rather than rejected.

    :param value: the ``status`` field as the API sent it.
    """
    if isinstance(value, BatchStatus):
        return value
    text = str(value)
    try:
        return BatchStatus(text)
    except ValueError:
        if text not in _unknown_statuses_logged:
            _unknown_statuses_logged.add(text)
            log.warning(
                "The MKA1 API sent a batch status this provider does not know: %r (not terminal).", text
            )
        return text


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestCounts(_Model):
    """How many requests of a batch there are, and how many completed or failed so far."""

    total: int = Field(default=0, ge=0)
    completed: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)


class BatchError(_Model):
    """One reason a batch failed (for validation errors, often with the input ``line``)."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(_Model):
    """The ``errors`` of a batch: ``{object: "list", data: [BatchError]}``."""

    object: str = "list"
    data: list[BatchError] = Field(default_factory=list)


class Batch(_Model):
    """A batch, as ``GET /batches/{id}`` returns it."""

    id: str
    object: str = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus | str
    created_at: int
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    metadata: dict[str, Any] | None = None
    max_concurrency: int | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> BatchStatus | str:
        return parse_status(value)

    @field_validator("request_counts", mode="before")
    @classmethod
    def _counts(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("errors", mode="before")
    @classmethod
    def _errors(cls, value: Any) -> Any:
        # Some OpenAI-compatible servers send the bare list.
        return {"data": value} if isinstance(value, list) else value

    @property
    def is_terminal(self) -> bool:
        """Whether the batch will not change any more (an unknown status is not terminal)."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_success(self) -> bool:
        """Whether the batch completed (some of its requests may still have failed)."""
        return self.status in SUCCESS_STATUSES


class FileObject(_Model):
    """A file, as ``GET /files/{id}`` returns it."""

    id: str
    object: str = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int | None = None
    status: str | None = None
    sha256: str | None = None


class FileDeleted(_Model):
    """The answer of ``DELETE /files/{id}``."""

    id: str
    object: str = "file"
    deleted: bool


ItemT = TypeVar("ItemT", bound=BaseModel)


class Page(_Model, Generic[ItemT]):
    """One page of a list call; the next page starts ``after`` :attr:`last_id` while :attr:`has_more`."""

    object: str = "list"
    data: list[ItemT] = Field(default_factory=list)
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @field_validator("has_more", mode="before")
    @classmethod
    def _has_more(cls, value: Any) -> Any:
        return False if value is None else value


BatchPage = Page[Batch]
FilePage = Page[FileObject]


class ResultResponse(_Model):
    """The ``response`` of a result line: what the model endpoint answered to one request."""

    status_code: int
    request_id: str | None = None
    body: Any = None


class ResultError(_Model):
    """The ``error`` of a result line: why one request failed."""

    code: str | None = None
    message: str | None = None


class ResultLine(_Model):
    """One line of a batch's output or error file. Match it to its request by :attr:`custom_id`."""

    id: str | None = None
    custom_id: str
    response: ResultResponse | None = None
    error: ResultError | None = None

    @property
    def ok(self) -> bool:
        """Whether this request succeeded: a 2xx response and no error."""
        return self.error is None and self.response is not None and 200 <= self.response.status_code < 300


class DownloadResult(NamedTuple):
    """What :meth:`~airflow_provider_batches.hooks.mka1.MKA1Hook.download_file` wrote."""

    path: str
    """Where the file now is: a local path, or the URL of an ``ObjectStoragePath``."""
    bytes: int
    """Its size in bytes, checked against the API's file object."""
    lines: int
    """Its number of lines (a last line without a newline counts)."""
