"""Deferrable wait on every batch of a job's round: :class:`MKA1BatchJobTrigger`, one trigger for all.

An :class:`~airflow_provider_batches.triggers.mka1.MKA1BaseTrigger` (its connection, the hook on the
loop's shared ``aiohttp`` session, serialization), it polls the round's batches with the job polling
policy (:class:`~airflow_provider_batches.jobs.waiting.JobWait`, one ``BatchPoller`` per batch), cancels
stalled batches, and fires once when every batch is terminal. It never decides the job's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_batches.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_batches.events import EVENT_ERROR, EVENT_SUCCESS, EVENT_TIMEOUT
from airflow_provider_batches.exceptions import MKA1Error, error_to_event
from airflow_provider_batches.jobs.waiting import JobWait
from airflow_provider_batches.triggers.mka1 import MKA1BaseTrigger


class MKA1BatchJobTrigger(MKA1BaseTrigger):
    """
    Wait in the triggerer until every batch of a round is terminal, the deadline passes or polling fails.

    It yields exactly one event: ``status`` (``success``: every batch is terminal, whatever its status;
    ``timeout``: the deadline passed first; ``error``: a permanent API error, or a batch's budget of
    consecutive transient errors is spent), ``batches`` (the last read of each batch, as JSON, ``None``
    for one never read), ``stalled`` (the ids it cancelled because they stalled), ``message`` and, for
    ``error``, ``error`` (``type``, ``status_code``, ``request_id``).

    :param batch_ids: the round's batches.
    :param round_no: the round (for log lines).
    :param mka1_conn_id: the MKA1 connection id (the trigger never carries the key itself).
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of``; ``None`` uses the connection's.
    :param poll_interval: the shortest interval between polls of a batch, in seconds.
    :param max_poll_interval: the longest interval between polls of a batch, in seconds.
    :param deadline: absolute end of the wait in Unix seconds (a triggerer restart keeps it), or ``None``.
    :param error_budget: consecutive transient errors tolerated per batch.
    :param stall_timeout: cancel a running batch whose counts have not moved for this many seconds.
    :param cancel_on_kill: cancel every unfinished batch when a user kills the deferred task (3.3+).
    :param started: when the job started, in Unix seconds; echoed in the event with ``deadline``, because
        ``airflow dags test`` (3.3) resumes the task without the kwargs it deferred with.
    """

    def __init__(
        self,
        *,
        batch_ids: list[str],
        round_no: int = 0,
        mka1_conn_id: str = DEFAULT_CONN_ID,
        on_behalf_of: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        deadline: float | None = None,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        stall_timeout: float | None = None,
        cancel_on_kill: bool = True,
        started: float | None = None,
    ) -> None:
        super().__init__(mka1_conn_id=mka1_conn_id, on_behalf_of=on_behalf_of)
        self.batch_ids = list(batch_ids)
        self.round_no = round_no
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.deadline = deadline
        self.error_budget = error_budget
        self.stall_timeout = stall_timeout
        self.cancel_on_kill = cancel_on_kill
        self.started = started
        self._wait: JobWait | None = None

    async def wait(self) -> AsyncIterator[TriggerEvent]:
        """
        Poll the round's batches until every one is terminal, the deadline passes or a poll fails for good,
        cancelling each batch that stalls for ``stall_timeout``, and yield the one event (``success``,
        ``timeout`` or ``error``; its fields are described above).
        """
        yield await self._run()

    async def _run(self) -> TriggerEvent:
        wait = self._wait = JobWait(
            self.batch_ids,
            round_no=self.round_no,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            error_budget=self.error_budget,
            deadline=self.deadline,
            stall_timeout=self.stall_timeout,
            logger=self.log,
        )
        stalled: set[str] = set()
        while True:
            plan = wait.next_polls()
            if plan is None:
                return self._event(EVENT_TIMEOUT, self._timeout_message(), stalled)
            due, delay = plan
            if not due:
                return self._event(
                    EVENT_SUCCESS, f"Every batch of round {self.round_no} is terminal.", stalled
                )
            await asyncio.sleep(delay)
            answers = await asyncio.gather(*(self.hook.aget_batch(b) for b in due), return_exceptions=True)
            for batch_id, answer in zip(due, answers, strict=True):
                if isinstance(answer, BaseException):
                    if not isinstance(answer, Exception):
                        raise answer
                    if not wait.observe_error(batch_id, answer):
                        message = f"Waiting on batch {batch_id} of round {self.round_no} failed: {answer}"
                        return self._event(EVENT_ERROR, message, stalled, error=error_to_event(answer))
                else:
                    wait.observe(answer)
            for batch_id in wait.stalled():
                if batch_id not in stalled:
                    stalled.add(batch_id)
                    await self._cancel(
                        batch_id, f"its request counts have not moved for {self.stall_timeout:g} s"
                    )

    async def _cancel(self, batch_id: str, why: str) -> None:
        self.log.warning("Cancelling batch %s: %s.", batch_id, why)
        try:
            await self.hook.acancel_batch(batch_id)
        except MKA1Error as exc:
            self.log.warning("Could not cancel batch %s: %s", batch_id, exc)

    async def on_kill(self) -> None:
        """
        Cancel every unfinished batch of the round when a user kills the deferred task (3.3+): only if
        :meth:`~airflow_provider_batches.triggers.mka1.MKA1BaseTrigger.kill_is_real` says the task is no
        longer deferred (not a hand-over to another triggerer), and only batches still not terminal
        when read again (a copy left behind is told late).
        """
        if not self.cancel_on_kill:
            return
        known = self._wait.batches if self._wait is not None else dict.fromkeys(self.batch_ids)
        unfinished = [b for b, batch in known.items() if batch is None or not batch.is_terminal]
        if not unfinished or not await self.kill_is_real(f"the batches of round {self.round_no}"):
            return
        try:
            for batch_id in unfinished:
                with contextlib.suppress(MKA1Error):
                    if (await self.hook.aget_batch(batch_id)).is_terminal:
                        continue
                await self._cancel(batch_id, "the task was killed")
        finally:
            await self.hook.aclose()

    def _timeout_message(self) -> str:
        assert self._wait is not None
        totals = self._wait.totals()
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.deadline or 0))
        return (
            f"Round {self.round_no} was not done by the deadline ({at}): {totals['terminal']} of "
            f"{totals['batches']} batches terminal."
        )

    def _event(self, status: str, message: str, stalled: set[str], **extra: Any) -> TriggerEvent:
        batches = self._wait.batches if self._wait is not None else {}
        return TriggerEvent(
            {
                "status": status,
                "round_no": self.round_no,
                "batches": {
                    b: (v.model_dump(mode="json") if v is not None else None) for b, v in batches.items()
                },
                "stalled": sorted(stalled),
                "message": message,
                "deadline": self.deadline,
                "started": self.started,
                **extra,
            }
        )
