"""Deferrable wait on an MKA1 batch: :class:`MKA1BatchTrigger` and the polling policy it shares."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_batches.exceptions import MKA1Error, error_from_event, error_to_event, is_transient
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import Batch, BatchStatus
from airflow_provider_batches.outcome import describe_batch

DEFAULT_CONN_ID = "mka1_default"
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_MAX_POLL_INTERVAL = 300.0
DEFAULT_ERROR_BUDGET = 10
POLL_JITTER = 0.1

EVENT_SUCCESS = "success"
EVENT_TERMINAL = "terminal"
EVENT_ERROR = "error"
EVENT_TIMEOUT = "timeout"


class BatchPoller:
    """
    The polling policy of one wait on a batch, shared by the trigger (async) and the operator (sync).

    It paces the polls, keeps the budget of consecutive transient errors, knows the deadline and logs
    each poll that changed something. It does no I/O: the caller fetches the batch and reports here.

    Pace, always within ``[poll_interval, max_poll_interval]``, with +/-10% jitter so that many waits
    drift apart, and never past the deadline:

    - ``validating`` and ``finalizing``: every ``poll_interval``, since they are short and what comes
      next (the lines start, the batch completes) should be seen soon;
    - ``in_progress``: the remaining time estimated from the progress of ``request_counts`` since the
      first poll that saw it running, so that the next poll lands about when the lines are done
      (doubling from the last interval while no progress shows);
    - anything else (``cancelling``, a status not known yet): ``poll_interval`` on entering it, then
      doubling while it lasts.

    :param batch_id: the batch waited on (for log lines).
    :param poll_interval: the shortest interval between polls, in seconds.
    :param max_poll_interval: the longest interval between polls, in seconds.
    :param error_budget: consecutive transient errors tolerated; the next one ends the wait.
    :param deadline: absolute end of the wait (Unix seconds), or ``None`` for no deadline.
    :param logger: where progress and errors are logged (a logging or structlog logger; the task's log).
    :param clock: wall clock, Unix seconds (a parameter for tests).
    """

    def __init__(
        self,
        batch_id: str,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        deadline: float | None = None,
        logger: Any = None,
        clock: Callable[[], float] = time.time,
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
        self.log = logger or logging.getLogger(__name__)
        self.clock = clock
        self.batch: Batch | None = None
        self.consecutive_errors = 0
        self._interval = self.poll_interval
        self._last_seen: tuple[object, ...] | None = None
        self._progress_anchor: tuple[float, int] | None = None

    def observe(self, batch: Batch) -> None:
        """Record a successful poll: log what changed and choose the next interval."""
        self.batch = batch
        self.consecutive_errors = 0
        counts = batch.request_counts
        seen = (str(batch.status), counts.total, counts.completed, counts.failed)
        same_status = self._last_seen is not None and self._last_seen[0] == seen[0]
        if seen != self._last_seen:
            self._last_seen = seen
            self.log.info("Batch %s: %s.", batch.id, describe_batch(batch))
        self._interval = self._pace(batch, same_status)

    def observe_error(self, exc: BaseException) -> bool:
        """
        Record a failed poll.

        :return: ``True`` if the wait goes on (a transient error within the budget), ``False`` if it must
            end: the error is permanent or the budget of consecutive transient errors is spent.
        """
        if not is_transient(exc):
            self.log.error("Polling batch %s failed with a permanent error: %s", self.batch_id, exc)
            return False
        self.consecutive_errors += 1
        if self.consecutive_errors > self.error_budget:
            self.log.error(
                "Polling batch %s failed %d times in a row (error_budget=%d); giving up: %s",
                self.batch_id,
                self.consecutive_errors,
                self.error_budget,
                exc,
            )
            return False
        self.log.warning(
            "Polling batch %s failed (%d of %d tolerated in a row), will try again: %s",
            self.batch_id,
            self.consecutive_errors,
            self.error_budget,
            exc,
        )
        backoff = self.poll_interval * 2 ** min(self.consecutive_errors - 1, 32)
        self._interval = min(backoff, self.max_poll_interval)
        return True

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
        return self._clamp(float(min(remaining, Fraction(self.max_poll_interval))))

    def _clamp(self, seconds: float) -> float:
        return min(max(seconds, self.poll_interval), self.max_poll_interval)


def batch_from_event(event: dict[str, Any]) -> Batch:
    """
    Return the final batch of a ``success`` or ``terminal`` trigger event.

    :raises MKA1Error: for an ``error`` event, the error the trigger met (same class, status code and
        request id); for an event without a batch, a plain one. ``timeout`` events are the caller's to
        handle before calling this.
    """
    status = event.get("status")
    if status in (EVENT_SUCCESS, EVENT_TERMINAL) and event.get("batch"):
        return Batch.model_validate(event["batch"])
    message = event.get("message") or f"Unexpected event from MKA1BatchTrigger: {event!r}"
    if not isinstance(event.get("error"), dict):
        raise MKA1Error(message)
    # The same class, status and request id as the trigger's last error, so callers can branch on it;
    # the event's message (e.g. that the error budget was spent) rides along as a note.
    exc = error_from_event(event["error"], message)
    if message != str(exc):
        exc.add_note(message)
    raise exc


class MKA1BatchTrigger(BaseTrigger):
    """
    Wait in the triggerer until an MKA1 batch is terminal, the deadline passes or polling fails for good.

    Fully async (the hook's ``aget_batch`` on its shared ``aiohttp`` session). It yields exactly one
    event, a dict with ``status`` (``success``: the batch completed; ``terminal``: it failed, expired or
    was cancelled; ``timeout``: the deadline passed first; ``error``: a permanent API error, or the
    budget of consecutive transient errors is spent), ``batch_id``, ``batch`` (the last batch read, as
    JSON, or ``None``), ``message`` and, for ``error``, ``error`` (``type``, ``status_code``,
    ``request_id``). The consumer applies
    :func:`~airflow_provider_batches.outcome.check_batch_outcome` to the batch.

    :param batch_id: the batch to wait on.
    :param mka1_conn_id: the MKA1 connection id (the trigger never carries the key itself).
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of``; ``None`` uses the connection's.
    :param poll_interval: the shortest interval between polls, in seconds.
    :param max_poll_interval: the longest interval between polls, in seconds.
    :param deadline: absolute end of the wait in Unix seconds (so a triggerer restart does not restart
        the clock), or ``None`` to wait until the batch is terminal (at most its completion window).
    :param error_budget: consecutive transient errors (429, 5xx, network) tolerated.
    :param cancel_on_kill: cancel the batch when a user kills the deferred task (Airflow 3.3+).
    """

    def __init__(
        self,
        *,
        batch_id: str,
        mka1_conn_id: str = DEFAULT_CONN_ID,
        on_behalf_of: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        deadline: float | None = None,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.batch_id = batch_id
        self.mka1_conn_id = mka1_conn_id
        self.on_behalf_of = on_behalf_of
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.deadline = deadline
        self.error_budget = error_budget
        self.cancel_on_kill = cancel_on_kill
        self._last_batch: Batch | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_id": self.batch_id,
                "mka1_conn_id": self.mka1_conn_id,
                "on_behalf_of": self.on_behalf_of,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "deadline": self.deadline,
                "error_budget": self.error_budget,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    @cached_property
    def hook(self) -> MKA1Hook:
        return MKA1Hook(mka1_conn_id=self.mka1_conn_id, on_behalf_of=self.on_behalf_of)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async for event in self._wait():
                yield event
        finally:
            # Releases this wait's share of the session; the last wait on the loop closes it.
            await self.hook.aclose()

    async def _wait(self) -> AsyncIterator[TriggerEvent]:
        poller = BatchPoller(
            self.batch_id,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            error_budget=self.error_budget,
            deadline=self.deadline,
            logger=self.log,
        )
        while True:
            try:
                batch = await self.hook.aget_batch(self.batch_id)
            except Exception as exc:
                if not poller.observe_error(exc):
                    yield self._error_event(exc, poller)
                    return
            else:
                self._last_batch = batch
                poller.observe(batch)
                if batch.is_terminal:
                    yield self._event(
                        EVENT_SUCCESS if batch.status == BatchStatus.COMPLETED else EVENT_TERMINAL,
                        f"Batch {batch.id} is {describe_batch(batch)}.",
                    )
                    return
            delay = poller.next_sleep()
            if delay is None:
                yield self._event(
                    EVENT_TIMEOUT,
                    f"Batch {self.batch_id} was not terminal by the deadline "
                    f"({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.deadline))}); last status: "
                    f"{describe_batch(self._last_batch) if self._last_batch else 'unknown'}.",
                )
                return
            await asyncio.sleep(delay)

    async def on_kill(self) -> None:
        """
        Cancel the batch when a user kills the deferred task (Airflow 3.3+).

        The triggerer cancels ``run()`` in two different situations. When a user marks the deferred task
        failed or success, or clears it, Airflow 3.3+ cancels ``run()`` with a "user action" message and
        then awaits this method: the batch is no longer wanted and is cancelled (if ``cancel_on_kill``).
        When the triggerer shuts down, restarts or hands the trigger to another triggerer, ``run()`` is
        cancelled too but this method is not called: the batch must go on, because the same trigger is
        rebuilt from its kwargs elsewhere and keeps waiting. That is why the cancel lives here and never
        in ``run()``'s cancellation path or in ``cleanup()``, which run in both situations. Airflow
        before 3.3 never calls this method, so killing a deferred task there leaves the batch running.
        """
        if not self.cancel_on_kill:
            self.log.info("Task killed; batch %s left running (cancel_on_kill=False).", self.batch_id)
            return
        if self._last_batch is not None and self._last_batch.is_terminal:
            return
        self.log.info("Task killed; cancelling batch %s.", self.batch_id)
        try:
            batch = await self.hook.acancel_batch(self.batch_id)
        except MKA1Error as exc:
            self.log.warning("Could not cancel batch %s: %s", self.batch_id, exc)
            return
        finally:
            await self.hook.aclose()
        self.log.info("Batch %s is now %s.", batch.id, describe_batch(batch))

    def _event(self, status: str, message: str, **extra: Any) -> TriggerEvent:
        batch = self._last_batch
        return TriggerEvent(
            {
                "status": status,
                "batch_id": self.batch_id,
                "batch": batch.model_dump(mode="json") if batch is not None else None,
                "message": message,
                **extra,
            }
        )

    def _error_event(self, exc: Exception, poller: BatchPoller) -> TriggerEvent:
        if poller.consecutive_errors > poller.error_budget:
            message = (
                f"Gave up waiting on batch {self.batch_id} after {poller.consecutive_errors} consecutive "
                f"transient errors (error_budget={poller.error_budget}); last: {exc}"
            )
        else:
            message = f"Waiting on batch {self.batch_id} failed: {exc}"
        error = error_to_event(exc)
        return self._event(EVENT_ERROR, message, error=error)
