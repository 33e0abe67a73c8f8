"""The polling policy of one wait on every batch of a round, shared by the job trigger and the sync path.

One :class:`~airflow_provider_batches.polling.BatchPoller` per batch (the same pace, jitter,
error budget and deadline as a single batch's wait); on top, the job's totals (logged when a poll
changed something, with an estimate of the time left), the pollers' own progress lines, and stall
detection. No I/O: the caller polls the batches this names and reports here; it logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from airflow_provider_batches.models import Batch
from airflow_provider_batches.polling import BatchPoller


class JobWait:
    """
    Wait on the batches of one round.

    :param batch_ids: the round's batches.
    :param round_no: the round (for log lines).
    :param poll_interval: the shortest interval between polls of one batch, in seconds.
    :param max_poll_interval: the longest interval between polls of one batch, in seconds.
    :param error_budget: consecutive transient errors tolerated per batch.
    :param deadline: absolute end of the wait (Unix seconds), or ``None``.
    :param stall_timeout: seconds a running batch's ``request_counts`` may stay still before it is
        reported by :meth:`stalled`; ``None``: never.
    :param logger: the task's or the trigger's logger.
    :param clock: wall clock, Unix seconds (a parameter for tests).
    """

    def __init__(
        self,
        batch_ids: Iterable[str],
        *,
        round_no: int = 0,
        poll_interval: float,
        max_poll_interval: float,
        error_budget: int,
        deadline: float | None = None,
        stall_timeout: float | None = None,
        logger: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = logger or logging.getLogger(__name__)
        self.clock = clock
        self.round_no = round_no
        self.stall_timeout = stall_timeout
        now = clock()
        self.pollers = {
            batch_id: BatchPoller(
                batch_id,
                poll_interval=poll_interval,
                max_poll_interval=max_poll_interval,
                error_budget=error_budget,
                deadline=deadline,
                clock=clock,
            )
            for batch_id in batch_ids
        }
        self.due = dict.fromkeys(self.pollers, now)
        self._moved: dict[str, tuple[tuple[int, int], float]] = {}
        self._started = now
        self._first_done: int | None = None
        self._last_totals: tuple[int, ...] | None = None

    @property
    def batches(self) -> dict[str, Batch | None]:
        """The last read of each batch of the round, by id; ``None`` for a batch not read yet."""
        return {batch_id: poller.batch for batch_id, poller in self.pollers.items()}

    @property
    def done(self) -> bool:
        """Whether every batch is terminal."""
        return all(p.batch is not None and p.batch.is_terminal for p in self.pollers.values())

    def next_polls(self) -> tuple[list[str], float] | None:
        """
        The batches to poll next and how long to sleep first; ``None`` once the deadline has passed.
        """
        waiting = {b: t for b, t in self.due.items() if not self._terminal(b)}
        if not waiting:
            return [], 0.0
        now = self.clock()
        first = min(waiting.values())
        delay = max(first - now, 0.0)
        poller = self.pollers[next(iter(waiting))]
        if poller.deadline is not None and now + delay >= poller.deadline:
            if now >= poller.deadline:
                return None
            delay = poller.deadline - now
        # Every batch due within a second of the first one goes in the same round of polls.
        return [b for b, t in waiting.items() if t <= first + 1.0], delay

    def observe(self, batch: Batch) -> None:
        """Record a successful poll of one batch."""
        poller = self.pollers[batch.id]
        line = poller.observe(batch)
        if line:
            self.log.info(line)
        now = self.clock()
        counts = (batch.request_counts.completed, batch.request_counts.failed)
        moved = self._moved.get(batch.id)
        if moved is None or moved[0] != counts:
            self._moved[batch.id] = (counts, now)
        self._schedule(batch.id, now)
        self._log_totals(now)

    def observe_error(self, batch_id: str, exc: BaseException) -> bool:
        """Record a failed poll; ``False`` if the wait must end (see ``BatchPoller.observe_error``)."""
        poller = self.pollers[batch_id]
        keep_going = poller.observe_error(exc)
        (self.log.warning if keep_going else self.log.error)(poller.error_line(exc))
        self._schedule(batch_id, self.clock())
        return keep_going

    def stalled(self) -> list[str]:
        """Running batches whose counts have not moved for ``stall_timeout`` seconds."""
        if self.stall_timeout is None:
            return []
        now = self.clock()
        return [
            batch_id
            for batch_id, (_, since) in self._moved.items()
            if not self._terminal(batch_id) and now - since >= self.stall_timeout
        ]

    def totals(self) -> dict[str, int]:
        """The round's totals so far: requests, done, failed, batches terminal of all."""
        seen = [p.batch for p in self.pollers.values() if p.batch is not None]
        return {
            "requests": sum(b.request_counts.total for b in seen),
            "completed": sum(b.request_counts.completed for b in seen),
            "failed": sum(b.request_counts.failed for b in seen),
            "terminal": sum(1 for b in seen if b.is_terminal),
            "batches": len(self.pollers),
        }

    def _terminal(self, batch_id: str) -> bool:
        batch = self.pollers[batch_id].batch
        return batch is not None and batch.is_terminal

    def _schedule(self, batch_id: str, now: float) -> None:
        delay = self.pollers[batch_id].next_sleep()
        self.due[batch_id] = now + (delay if delay is not None else 0.0)

    def _log_totals(self, now: float) -> None:
        totals = self.totals()
        key = tuple(totals.values())
        if key == self._last_totals:
            return
        self._last_totals = key
        done = totals["completed"] + totals["failed"]
        if self._first_done is None:
            self._first_done, self._started = done, now
        left = ""
        rate = (done - self._first_done) / (now - self._started) if now > self._started else 0.0
        if rate > 0 and totals["requests"] > done:
            left = f", about {_duration((totals['requests'] - done) / rate)} left"
        self.log.info(
            "Job round %d: %d of %d requests done, %d failed; %d of %d batches terminal%s.",
            self.round_no,
            done,
            totals["requests"],
            totals["failed"],
            totals["terminal"],
            totals["batches"],
            left,
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
