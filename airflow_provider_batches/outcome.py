"""The one rule that says what a batch's status means for the Airflow task waiting on it.

The sensor, both waiting modes of :class:`~airflow_provider_batches.operators.mka1.MKA1BatchOperator`
and the handlers of :class:`~airflow_provider_batches.triggers.mka1.MKA1BatchTrigger` events all call
:func:`check_batch_outcome`; nothing else decides whether a batch succeeded.
"""

from __future__ import annotations

import logging
from fractions import Fraction

from airflow_provider_batches.exceptions import (
    MKA1BatchCancelledError,
    MKA1BatchExpiredError,
    MKA1BatchFailedError,
    MKA1BatchPartialFailureError,
)
from airflow_provider_batches.models import Batch, BatchStatus

log = logging.getLogger(__name__)

# A failed batch can list thousands of line errors; a task log and an exception message need a few.
_MAX_ERRORS_SHOWN = 5


def validate_max_failed_ratio(value: float) -> float:
    """
    Return ``value`` as a float if it is a valid ``max_failed_ratio``, else raise :class:`ValueError`.

    :param value: share of failed requests a completed batch may have and still succeed, 0.0 to 1.0.
    """
    ratio = float(value)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"max_failed_ratio must be between 0.0 and 1.0, got {value!r}")
    return ratio


def check_batch_outcome(batch: Batch, max_failed_ratio: float = 0.0) -> bool:
    """
    Decide what ``batch`` means for the task waiting on it.

    - ``completed``: success, unless ``request_counts.failed / request_counts.total`` exceeds
      ``max_failed_ratio`` (default 0: a single failed request fails the task); the error message
      names the ``error_file_id`` that holds the failed lines.
    - ``failed``: raises :class:`~airflow_provider_batches.exceptions.MKA1BatchFailedError` with the
      batch's ``errors`` (code, message, line).
    - ``expired`` / ``cancelled``: raise their own errors, saying whether partial output exists.
    - any other status, including one this provider does not know yet: not terminal, keep waiting.

    The errors raised here are final (``AirflowFailException``): retrying the task would not change the
    batch. Trouble reaching the API is never decided here.

    :param batch: the batch as last read from the API.
    :param max_failed_ratio: share of failed requests (0.0 to 1.0) a completed batch may have.
    :return: ``True`` if the batch completed successfully, ``False`` if it is not terminal yet.
    """
    ratio = validate_max_failed_ratio(max_failed_ratio)
    status = batch.status
    counts = batch.request_counts
    if status == BatchStatus.COMPLETED:
        if counts.failed:
            # Exact arithmetic: counts are ints of any size, and a float division could overflow.
            failed_share = Fraction(counts.failed, counts.total) if counts.total > 0 else Fraction(1)
            shown = f"{float(failed_share):.2%}" if abs(failed_share) <= 1 else "more than 100%"
            failed = f"{counts.failed} of {counts.total} requests failed ({shown})"
            where = f"the failed lines are in error file {batch.error_file_id or '(none reported)'}"
            if failed_share > Fraction(ratio):
                raise MKA1BatchPartialFailureError(
                    f"Batch {batch.id} completed but {failed}, over max_failed_ratio={ratio:g}; {where}.",
                    batch=batch,
                )
            log.warning(
                "Batch %s completed; %s, within max_failed_ratio=%g; %s.", batch.id, failed, ratio, where
            )
        return True
    if status == BatchStatus.FAILED:
        raise MKA1BatchFailedError(f"Batch {batch.id} failed: {_describe_errors(batch)}", batch=batch)
    if status == BatchStatus.EXPIRED:
        raise MKA1BatchExpiredError(
            f"Batch {batch.id} expired before it finished its completion window "
            f"({counts.completed} of {counts.total} requests completed, {counts.failed} failed); "
            f"{_describe_partial_output(batch)}",
            batch=batch,
        )
    if status == BatchStatus.CANCELLED:
        raise MKA1BatchCancelledError(
            f"Batch {batch.id} was cancelled "
            f"({counts.completed} of {counts.total} requests completed, {counts.failed} failed); "
            f"{_describe_partial_output(batch)}",
            batch=batch,
        )
    if not isinstance(status, BatchStatus):
        log.warning("Batch %s has a status this provider does not know: %r; waiting on.", batch.id, status)
    return False


def describe_batch(batch: Batch) -> str:
    """One line for logs and messages: ``"in_progress (40/100 completed, 2 failed)"``."""
    status = batch.status.value if isinstance(batch.status, BatchStatus) else str(batch.status)
    counts = batch.request_counts
    return f"{status} ({counts.completed}/{counts.total} completed, {counts.failed} failed)"


def _describe_errors(batch: Batch) -> str:
    errors = list(batch.errors.data) if batch.errors and batch.errors.data else []
    if not errors:
        return "the API gave no reason."
    shown = []
    for error in errors[:_MAX_ERRORS_SHOWN]:
        where = f" (line {error.line})" if error.line is not None else ""
        shown.append(f"[{error.code}] {error.message}{where}")
    more = len(errors) - _MAX_ERRORS_SHOWN
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _describe_partial_output(batch: Batch) -> str:
    parts = []
    if batch.output_file_id:
        parts.append(f"partial output is in file {batch.output_file_id}")
    else:
        parts.append("no partial output")
    if batch.error_file_id:
        parts.append(f"failed lines are in file {batch.error_file_id}")
    return ", ".join(parts) + "."
