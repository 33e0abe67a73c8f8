"""
The retry rule of one call, for both transports: :class:`RetryPolicy` (which failures, how long to
wait) and :class:`RetryBudget` (the retries and time one call has left). Pure: it never sleeps or sends.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from airflow_provider_batches.constants import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_CAP,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_AFTER_CAP,
    DEFAULT_TOTAL_TIMEOUT,
    RETRYABLE_STATUSES,
)
from airflow_provider_batches.exceptions import MKA1Error
from airflow_provider_batches.responses import header

__all__ = [
    "RETRYABLE_STATUSES",
    "Attempt",
    "RetryBudget",
    "RetryPolicy",
    "is_retryable_status",
    "may_have_been_processed",
    "retry_after_seconds",
]


@dataclass(frozen=True)
class RetryPolicy:
    """
    The retry rule, for both paths: which failures are retried, and how long to wait before the next try.

    Retried: 408, 429, 500, 502, 503, 504, and network errors or timeouts (``status=None``). The wait is
    the server's ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), capped at
    ``retry_after_cap``; without either, exponential backoff with full jitter:
    ``uniform(0, min(backoff_cap, backoff_base * 2 ** attempt))``. At most ``max_retries`` retries, and
    no retry that would end after ``total_timeout`` seconds from the first try.

    :param max_retries: retries after the first try (0: never retry).
    :param backoff_base: first backoff ceiling, in seconds.
    :param backoff_cap: largest backoff ceiling, in seconds.
    :param retry_after_cap: largest wait honoured from a ``Retry-After`` header, in seconds.
    :param total_timeout: time budget of one call and its retries, in seconds.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT

    def delay_for(
        self,
        attempt: int,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        *,
        elapsed: float = 0.0,
    ) -> float | None:
        """
        Seconds to wait before retrying a failed try, or ``None`` if it must not be retried.

        :param attempt: retries already made (0 after the first try failed).
        :param status: the answer's HTTP status, or ``None`` for a network error or timeout.
        :param headers: the answer's headers (for ``Retry-After``), if any.
        :param elapsed: seconds since the first try started.
        """
        if status is not None and not is_retryable_status(status):
            return None
        if attempt >= self.max_retries:
            return None
        delay = retry_after_seconds(headers)
        if delay is not None:
            delay = min(delay, self.retry_after_cap)
        else:
            # The exponent is bounded so that a huge max_retries cannot overflow a float.
            ceiling = min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 64))
            delay = random.uniform(0.0, ceiling)
        if elapsed + delay > self.total_timeout:
            return None
        return delay


@dataclass
class Attempt:
    """
    One try of a call: the transport's response, or the error and what is known of the answer.

    :param response: the successful answer (the transport's own response object), or ``None``.
    :param error: why the try failed, or ``None``.
    :param status: the answer's HTTP status, ``None`` if there was no answer.
    :param headers: the answer's headers, if any.
    :param sent: whether the request may have reached the server (``False`` only if no connection was
        ever made).
    """

    response: Any = None
    error: MKA1Error | None = None
    status: int | None = None
    headers: Mapping[str, str] | None = None
    sent: bool = True

    @property
    def may_have_taken_effect(self) -> bool:
        """Whether this failed try of a non-idempotent call (``POST /batches``) may have done its work."""
        retryable = self.status is None or is_retryable_status(self.status)
        return retryable and may_have_been_processed(self.status, sent=self.sent)


@dataclass
class RetryBudget:
    """
    What one call may still spend on retries: a count and a clock, started once per call and shared by
    every try of it (a resumed download spends the budget of the download, not a new one per resume).

    :param policy: the retry rule.
    """

    policy: RetryPolicy
    retries: int = 0
    started: float = field(default_factory=time.monotonic)

    def next_delay(self, attempt: Attempt) -> float | None:
        """Seconds to wait before the next try of ``attempt``'s call (counted), or ``None``: give up."""
        elapsed = time.monotonic() - self.started
        delay = self.policy.delay_for(self.retries, attempt.status, attempt.headers, elapsed=elapsed)
        if delay is not None:
            self.retries += 1
        return delay


def is_retryable_status(status: int) -> bool:
    """Whether an answer with HTTP ``status`` is worth trying again."""
    return status in RETRYABLE_STATUSES


def may_have_been_processed(status: int | None, *, sent: bool) -> bool:
    """
    Whether a failed non-idempotent call (``POST /batches``) may have taken effect on the server.

    A 429 is answered before anything is processed, and a request that never left (connection refused,
    connect timeout) did nothing; anything else (a 5xx, a 408, a timeout or a drop while waiting for the
    answer) may have created the batch.

    :param status: the answer's status, or ``None`` if there was no answer.
    :param sent: whether the request may have reached the server (``False`` only if the connection
        was never established).
    """
    if status is None:
        return sent
    return status != HTTPStatus.TOO_MANY_REQUESTS


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """
    The wait the server asked for, in seconds: ``retry-after-ms``, else ``Retry-After`` as seconds or an
    HTTP date. ``None`` if absent or unreadable.

    :param headers: the answer's headers.
    :param now: the current Unix time (a parameter for tests).
    """
    raw_ms = header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    raw = header(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
