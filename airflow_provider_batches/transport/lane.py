"""
:class:`Lane`: the admission control in front of one shared ``aiohttp`` session (one event loop,
connection and end user). A call awaits :meth:`Lane.admit`, sends, and reports how it went; the
:mod:`~airflow_provider_batches.pacing` core decides who goes when. It never sends a request itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from airflow_provider_batches.exceptions import MKA1APIError, MKA1ConnectionError, MKA1Error
from airflow_provider_batches.pacing import Change, Pacing, PacingRules, Ticket

log = logging.getLogger(__name__)

# The shortest timer the lane sets: at hundreds of calls a second it admits a few per wake-up instead of
# waking the loop for every single one.
MIN_TICK = 0.005


class LaneProbeFailed(Exception):
    """The lane's probe of a gateway that is down failed: a failed try of every call waiting in the lane."""

    def __init__(self, error: MKA1Error) -> None:
        super().__init__(str(error))
        self.error = error

    def error_for(self, method: str, path: str) -> MKA1Error:
        """The probe's error as the failure of the waiting call ``method path`` (same class and status)."""
        error = self.error
        probe = f"{getattr(error, 'method', None)} {getattr(error, 'path', None)}"
        if isinstance(error, MKA1APIError):
            return type(error)(
                error.status_code,
                f"{error.message} (the answer to the lane's probe {probe})",
                method=method,
                path=path,
                request_id=error.request_id,
            )
        return MKA1ConnectionError(
            f"MKA1 API {method} {path} was not sent: the lane's probe {probe} failed: {error}",
            method=method,
            path=path,
        )


class Lane:
    """
    Admission to one shared session: calls wait here (paced, fairly) instead of failing on 429s.

    :param name: how the log lines name the lane (connection id and end user; never the key).
    :param rules: the pacing constants (the connection's ceiling among them).
    :param clock: monotonic seconds (a parameter for tests).
    """

    def __init__(
        self, name: str, rules: PacingRules | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.clock = clock
        self.pacing = Pacing(rules, now=clock())
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    async def admit(self, *, urgent: bool = False, since: float | None = None) -> Ticket:
        """
        Wait until this call may go; return its ticket, to hand back to :meth:`succeeded`,
        :meth:`rate_limited`, :meth:`failed` or :meth:`abandoned`.

        :param urgent: the call's batch is about to end (a head start in the queue).
        :param since: when this call first asked (a call back from a 429 keeps its place).
        :raises LaneProbeFailed: the lane is down and its probe failed meanwhile (a failed try of this
            call: ask again with the same ``since`` if the retry budget allows).
        """
        ticket = self.pacing.request(self.clock(), urgent=urgent, since=since)
        if ticket.admitted_at is not None:
            return ticket
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[ticket.seq] = future
        self._schedule()
        try:
            await future
        except asyncio.CancelledError:
            if ticket.admitted_at is not None:
                self.pacing.abandoned(ticket)
            else:
                self.pacing.cancel(ticket)
            self._schedule()
            raise
        finally:
            self._waiters.pop(ticket.seq, None)
        return ticket

    def succeeded(self, ticket: Ticket) -> None:
        """The call was answered, and not with a 429 or a transient failure."""
        self._log(self.pacing.succeeded(ticket, self.clock()))
        self._schedule()

    def rate_limited(self, ticket: Ticket, retry_after: float | None) -> None:
        """The call was answered 429; ``retry_after`` is the server's wait in seconds, if it sent one."""
        self._log(self.pacing.rate_limited(ticket, self.clock(), retry_after))
        self._schedule()

    def failed(self, ticket: Ticket, error: MKA1Error) -> None:
        """The call failed transiently; a failed probe fails the try of every call waiting too."""
        self._log(self.pacing.failed(ticket, self.clock()))
        if ticket.probe:
            for waiter in self.pacing.failed_waiters():
                future = self._waiters.get(waiter.seq)
                if future is not None and not future.done():
                    future.set_exception(LaneProbeFailed(error))
        self._schedule()

    def abandoned(self, ticket: Ticket) -> None:
        """The admitted call ended without an answer (cancelled)."""
        self.pacing.abandoned(ticket)
        self._schedule()

    def _release(self) -> None:
        self._timer = None
        for ticket in self.pacing.admit(self.clock()):
            future = self._waiters.get(ticket.seq)
            if future is None or future.done():
                self.pacing.abandoned(ticket)  # its task was cancelled after the lane let it through
            else:
                future.set_result(None)
        self._schedule()

    def _schedule(self) -> None:
        """Wake up when the next queued call may go (one timer for the whole lane)."""
        now = self.clock()
        delay = self.pacing.next_admission(now)
        if delay is None:
            return
        at = now + max(delay, MIN_TICK if delay > 0 else 0.0)
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer, self._timer_at = loop.call_at(loop.time() + (at - now), self._release), at

    def close(self) -> None:
        """Stop the lane's timer (the last call of the lane is done)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _log(self, change: Change | None) -> None:
        if change is not None:
            getattr(log, change.level)("MKA1 lane %s: %s.", self.name, change.message)
