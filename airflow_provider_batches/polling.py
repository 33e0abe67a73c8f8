"""
Waiting on a batch without doing I/O: :class:`BatchPoller` (the pace, the error budget and the deadline
of one wait, shared by the trigger and the operator's sync wait) and :class:`WaitOptions` (the knobs of
a wait, checked once, and how a trigger is built from them for the sensor and the operator).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from fractions import Fraction
from typing import Any, TypeVar

from airflow_provider_batches.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    HEARTBEAT_SECONDS,
    POLL_JITTER,
)
from airflow_provider_batches.exceptions import is_transient
from airflow_provider_batches.models import Batch, BatchStatus
from airflow_provider_batches.progress import batch_progress, describe_progress

T = TypeVar("T")


def seconds(value: timedelta | float | None, name: str) -> float | None:
    """
    ``value`` in seconds (``None`` stays ``None``), refusing anything not positive.

    :param value: seconds or a ``timedelta``.
    :param name: the argument's name, for the error message.
    """
    if value is None:
        return None
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not result > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return result


@dataclass(frozen=True)
class WaitOptions:
    """
    How one task waits on batches, checked once in the operator's or sensor's constructor; the one place
    that turns them into a :class:`BatchPoller` or into a trigger's keyword arguments.

    :param mka1_conn_id: the MKA1 connection id.
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of``; ``None`` uses the connection's.
    :param poll_interval: the shortest interval between polls, in seconds.
    :param max_poll_interval: the longest interval between polls, in seconds.
    :param timeout: the longest wait in seconds, or ``None`` for none.
    :param error_budget: consecutive transient errors tolerated.
    :param cancel_on_kill: cancel the batch when the task is killed while it waits.
    """

    mka1_conn_id: str = DEFAULT_CONN_ID
    on_behalf_of: str | None = None
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL
    timeout: float | None = None
    error_budget: int = DEFAULT_ERROR_BUDGET
    cancel_on_kill: bool = True

    @classmethod
    def of(
        cls,
        *,
        poll_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: timedelta | float = DEFAULT_MAX_POLL_INTERVAL,
        timeout: timedelta | float | None = None,
        **options: Any,
    ) -> WaitOptions:
        """Options from operator arguments: intervals and timeout as seconds or ``timedelta``, checked."""
        return cls(
            poll_interval=seconds(poll_interval, "poll_interval") or DEFAULT_POLL_INTERVAL,
            max_poll_interval=seconds(max_poll_interval, "max_poll_interval") or DEFAULT_MAX_POLL_INTERVAL,
            timeout=seconds(timeout, "timeout"),
            **options,
        )

    def deadline(self) -> float | None:
        """The absolute end of a wait starting now (Unix seconds), or ``None``."""
        return time.time() + self.timeout if self.timeout is not None else None

    def poller(self, batch_id: str) -> BatchPoller:
        """The poller of a sync wait on ``batch_id`` starting now."""
        return BatchPoller(
            batch_id,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            error_budget=self.error_budget,
            deadline=self.deadline(),
        )

    def trigger(self, trigger_class: Callable[..., T], **what: Any) -> T:
        """
        A trigger of ``trigger_class`` for a wait starting now, with these options as keyword arguments
        (the timeout becomes an absolute ``deadline``, so a triggerer restart does not restart the clock).

        :param trigger_class: e.g. :class:`~airflow_provider_batches.triggers.mka1.MKA1BatchTrigger`.
        :param what: what to wait on, e.g. ``batch_id=...``.
        """
        kwargs = asdict(self)
        del kwargs["timeout"]
        return trigger_class(**what, **kwargs, deadline=self.deadline())


class BatchPoller:
    """
    The polling policy of one wait on a batch, shared by the trigger (async) and the operator (sync).

    It paces the polls, keeps the budget of consecutive transient errors, knows the deadline and words
    the progress line that is due (at each poll that changed something, and every
    :data:`~airflow_provider_batches.constants.HEARTBEAT_SECONDS` while nothing moves). It does no I/O: the
    caller fetches the batch, reports here, and logs the lines it gets back.

    Pace, always within ``[poll_interval, max_poll_interval]``, with +/-10% jitter so that many waits
    drift apart, and never past the deadline:

    - ``validating`` and ``finalizing``: every ``poll_interval``, since they are short and what comes
      next (the lines start, the batch completes) should be seen soon;
    - ``in_progress``: the remaining time estimated from the progress of ``request_counts`` since the
      first poll that saw it running, so that the next poll lands about when the lines are done
      (doubling from the last interval while no progress shows);
    - anything else (``cancelling``, a status not known yet): ``poll_interval`` on entering it, then
      doubling while it lasts.

    :param batch_id: the batch waited on (for the lines).
    :param poll_interval: the shortest interval between polls, in seconds.
    :param max_poll_interval: the longest interval between polls, in seconds.
    :param error_budget: consecutive transient errors tolerated; the next one ends the wait.
    :param deadline: absolute end of the wait (Unix seconds), or ``None`` for no deadline.
    :param clock: wall clock, Unix seconds (a parameter for tests).
    :param error_backoff: after a transient error, double the interval (up to ``max_poll_interval``); off
        where the transport's lane already probes a failing gateway on behalf of every wait, so that a wait
        is back at its pace within a poll interval of the gateway's recovery.
    """

    def __init__(
        self,
        batch_id: str,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        deadline: float | None = None,
        clock: Callable[[], float] = time.time,
        error_backoff: bool = True,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if error_budget < 0:
            raise ValueError(f"error_budget must be 0 or more, got {error_budget!r}")
        self.batch_id = batch_id
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.error_budget = error_budget
        self.deadline = deadline
        self.clock = clock
        self.error_backoff = error_backoff
        self.batch: Batch | None = None
        self.consecutive_errors = 0
        self._interval = self.poll_interval
        self._last_seen: tuple[object, ...] | None = None
        self._last_line_at: float | None = None
        self._progress_anchor: tuple[float, int] | None = None
        self._remaining: float | None = None

    @property
    def near_end(self) -> bool:
        """
        Whether the next poll may well find the batch terminal: the first poll (it may have ended already),
        ``finalizing``, or ``in_progress`` with its estimated end within a poll interval.
        """
        if self.batch is None or self.batch.status == BatchStatus.FINALIZING:
            return True
        return self._remaining is not None and self._remaining <= self.poll_interval

    def observe(self, batch: Batch) -> str | None:
        """
        Record a successful poll and choose the next interval.

        :return: the progress line due for the task log, or ``None``: a line when the poll changed the
            status or the counts, and one at least every ``HEARTBEAT_SECONDS`` while nothing moves.
        """
        self.batch = batch
        self.consecutive_errors = 0
        counts = batch.request_counts
        seen = (str(batch.status), counts.total, counts.completed, counts.failed)
        same_status = self._last_seen is not None and self._last_seen[0] == seen[0]
        now = self.clock()
        line = None
        moved = seen != self._last_seen
        if moved or self._last_line_at is None or now - self._last_line_at >= HEARTBEAT_SECONDS:
            self._last_seen, self._last_line_at = seen, now
            line = f"Batch {batch.id}: {describe_progress(batch_progress(batch, now), still=not moved)}."
        self._interval = self._pace(batch, same_status)
        return line

    def observe_error(self, exc: BaseException) -> bool:
        """
        Record a failed poll (:meth:`error_line` words it for the log).

        :return: ``True`` if the wait goes on (a transient error within the budget), ``False`` if it must
            end: the error is permanent or the budget of consecutive transient errors is spent.
        """
        if not is_transient(exc):
            return False
        self.consecutive_errors += 1
        if self.consecutive_errors > self.error_budget:
            return False
        if self.error_backoff:
            backoff = self.poll_interval * 2 ** min(self.consecutive_errors - 1, 32)
            self._interval = min(backoff, self.max_poll_interval)
        else:
            self._interval = self.poll_interval
        return True

    def error_line(self, exc: BaseException) -> str:
        """The log line for ``exc``, just passed to :meth:`observe_error` (a warning if the wait goes on)."""
        if not is_transient(exc):
            return f"Polling batch {self.batch_id} failed with a permanent error: {exc}"
        if self.consecutive_errors > self.error_budget:
            return (
                f"Polling batch {self.batch_id} failed {self.consecutive_errors} times in a row "
                f"(error_budget={self.error_budget}); giving up: {exc}"
            )
        return (
            f"Polling batch {self.batch_id} failed ({self.consecutive_errors} of {self.error_budget} "
            f"tolerated in a row), will try again: {exc}"
        )

    def next_sleep(self) -> float | None:
        """Seconds to wait before the next poll, or ``None`` once the deadline has passed."""
        base = self._interval
        low = max(self.poll_interval, base * (1 - POLL_JITTER))
        high = min(self.max_poll_interval, base * (1 + POLL_JITTER))
        delay = random.uniform(low, high) if high > low else base
        if self.deadline is None:
            return delay
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            return None
        return min(delay, remaining)

    def _pace(self, batch: Batch, same_status: bool) -> float:
        self._remaining = None
        status = batch.status
        if status in (BatchStatus.VALIDATING, BatchStatus.FINALIZING):
            return self.poll_interval
        if status != BatchStatus.IN_PROGRESS:
            return self._clamp(self._interval * 2) if same_status else self.poll_interval
        counts = batch.request_counts
        done = counts.completed + counts.failed
        now = self.clock()
        if self._progress_anchor is None:
            self._progress_anchor = (now, done)
            return self.poll_interval
        anchor_time, anchor_done = self._progress_anchor
        if done <= anchor_done or now <= anchor_time or counts.total <= 0:
            return self._clamp(self._interval * 2)
        # The remaining time at the rate seen since the anchor; exact arithmetic, since counts are ints of
        # any size and a float division could overflow.
        remaining = Fraction(max(counts.total - done, 0)) * Fraction(now - anchor_time)
        remaining /= done - anchor_done
        self._remaining = float(min(remaining, Fraction(self.max_poll_interval)))
        return self._clamp(self._remaining)

    def _clamp(self, seconds: float) -> float:
        return min(max(seconds, self.poll_interval), self.max_poll_interval)
