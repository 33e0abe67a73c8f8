"""The resubmission rule: which request that did not succeed a later round may fix. Pure: no I/O.

A request is resent in the next round (up to ``resubmit_rounds``) when its batch never ran it (the
batch expired, was cancelled, or failed as a whole for a reason that is not the input's) or when its
result line failed for a transient reason: a 429 or 5xx ``response.status_code``, or an error code in
``resubmit_codes``. Everything else (a content filter, a bad request, an invalid output) is final.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from airflow_provider_batches.jobs.index import FAILED, NEVER_RAN, RETRY_FAILED, SUCCEEDED
from airflow_provider_batches.models import Batch, BatchStatus

DEFAULT_RESUBMIT_CODES: frozenset[str] = frozenset(
    {
        "rate_limit_exceeded",
        "rate_limited",
        "too_many_requests",
        "server_error",
        "internal_error",
        "service_unavailable",
        "overloaded",
        "bad_gateway",
        "timeout",
        "gateway_timeout",
        "request_timeout",
    }
)
"""Line error codes a retry can fix (as the OpenAI-compatible gateways name them)."""

_MESSAGE_LIMIT = 1000


def is_transient_status(status_code: int | None) -> bool:
    """Whether an HTTP status of a line's response is worth a retry: 408, 429 and 5xx."""
    return status_code is not None and (status_code in (408, 429) or 500 <= status_code <= 599)


def classify_result(
    line: Mapping[str, Any], resubmit_codes: Collection[str]
) -> tuple[str, str | None, str | None]:
    """
    What one result line means: ``(status, error code, error message)``, status one of
    ``succeeded``, ``retry_failed`` (resend it) or ``failed`` (final).

    :param line: a parsed line of a batch's output or error file.
    :param resubmit_codes: the error codes that are transient.
    """
    response = line.get("response")
    status_code = response.get("status_code") if isinstance(response, Mapping) else None
    error = line.get("error")
    if not error and isinstance(status_code, int) and 200 <= status_code < 300:
        return SUCCEEDED, None, None
    code: str | None = None
    message: str | None = None
    if isinstance(error, Mapping):
        code = None if error.get("code") is None else str(error.get("code"))
        message = None if error.get("message") is None else str(error.get("message"))[:_MESSAGE_LIMIT]
    if code is None and isinstance(response, Mapping):
        body = response.get("body")
        inner = body.get("error") if isinstance(body, Mapping) else None
        if isinstance(inner, Mapping):
            code = None if inner.get("code") is None else str(inner.get("code"))
            message = message or (None if inner.get("message") is None else str(inner.get("message")))
    code = code or (f"http_{status_code}" if isinstance(status_code, int) else "unknown_error")
    transient = code in resubmit_codes or is_transient_status(
        status_code if isinstance(status_code, int) else None
    )
    return (RETRY_FAILED if transient else FAILED), code, message


def unfinished_lines(batch: Batch, resubmit_codes: Collection[str]) -> tuple[str, str, str]:
    """
    What the requests of a terminal batch without a result line mean: ``(status, code, message)``;
    status ``never_ran`` (resend them) or ``failed`` (the batch failed because of its input).
    """
    status = batch.status
    if status == BatchStatus.EXPIRED:
        return NEVER_RAN, "batch_expired", f"Batch {batch.id} expired before this request ran."
    if status == BatchStatus.CANCELLED:
        return NEVER_RAN, "batch_cancelled", f"Batch {batch.id} was cancelled before this request ran."
    if status == BatchStatus.FAILED:
        errors = list(batch.errors.data) if batch.errors else []
        codes = [str(e.code) for e in errors if e.code]
        message = "; ".join(f"[{e.code}] {e.message}" for e in errors[:3]) or "the API gave no reason"
        if codes and not all(code in resubmit_codes for code in codes):
            return FAILED, codes[0], f"Batch {batch.id} failed: {message}"[:_MESSAGE_LIMIT]
        return NEVER_RAN, codes[0] if codes else "batch_failed", f"Batch {batch.id} failed: {message}"
    return (
        NEVER_RAN,
        "missing_result",
        f"Batch {batch.id} is {status} but returned no result for this request.",
    )
