"""
Deferrable waits in the triggerer: :class:`MKA1BaseTrigger` (what every MKA1 trigger shares: its
connection, the hook on the loop's shared session, serialization) and :class:`MKA1BatchTrigger` (one
batch), and the reading of their events. The pace of a wait is :mod:`~airflow_provider_batches.polling`'s;
whether a batch succeeded is :mod:`~airflow_provider_batches.outcome`'s, never decided here.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_batches.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_batches.events import (
    EVENT_ERROR,
    EVENT_SUCCESS,
    EVENT_TERMINAL,
    EVENT_TIMEOUT,
    batch_from_event,
)
from airflow_provider_batches.exceptions import MKA1Error, error_to_event
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import Batch, BatchStatus
from airflow_provider_batches.outcome import describe_batch
from airflow_provider_batches.polling import BatchPoller

__all__ = [
    "DEFAULT_CONN_ID",
    "DEFAULT_ERROR_BUDGET",
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "EVENT_ERROR",
    "EVENT_SUCCESS",
    "EVENT_TERMINAL",
    "EVENT_TIMEOUT",
    "BatchPoller",
    "MKA1BaseTrigger",
    "MKA1BatchTrigger",
    "batch_from_event",
]


class MKA1BaseTrigger(BaseTrigger):
    """
    What every MKA1 trigger shares: the connection (never the key itself), a hook on the running loop's
    shared session that is released when ``run()`` ends, and ``serialize()`` from the constructor's
    keyword arguments. A subclass stores each constructor argument under its own name and yields its
    events from :meth:`wait`.

    :param mka1_conn_id: the MKA1 connection id.
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of``; ``None`` uses the connection's.
    """

    def __init__(self, *, mka1_conn_id: str = DEFAULT_CONN_ID, on_behalf_of: str | None = None) -> None:
        super().__init__()
        self.mka1_conn_id = mka1_conn_id
        self.on_behalf_of = on_behalf_of

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """
        The trigger's class path and constructor keyword arguments (each read from the attribute of its
        name), which the triggerer stores and rebuilds the trigger from. They carry the connection id and
        ``on_behalf_of``, never the API key: the hook reads the connection in the triggerer.
        """
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return f"{type(self).__module__}.{type(self).__qualname__}", {n: getattr(self, n) for n in names}

    @cached_property
    def hook(self) -> MKA1Hook:
        """
        The :class:`~airflow_provider_batches.hooks.mka1.MKA1Hook` of ``mka1_conn_id`` and ``on_behalf_of``,
        made on first use; its async calls share one ``aiohttp`` session per connection on the running loop.
        """
        return MKA1Hook(mka1_conn_id=self.mka1_conn_id, on_behalf_of=self.on_behalf_of)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """
        Yield the events of :meth:`wait` (exactly one, for the MKA1 triggers), then release this trigger's
        share of the loop's session, also when the triggerer cancels the run.
        """
        try:
            async for event in self.wait():
                yield event
        finally:
            # Releases this wait's share of the session; the last wait on the loop closes it.
            await self.hook.aclose()

    def wait(self) -> AsyncIterator[TriggerEvent]:
        """The trigger's events (one, for a wait)."""
        raise NotImplementedError

    async def kill_is_real(self, what: str) -> bool:
        """
        Whether ``on_kill`` should stop ``what`` (e.g. ``"batch b_1"``): only if the task instance is
        really no longer deferred.

        Airflow 3.3 awaits ``on_kill`` after a user marks the deferred task failed or success or clears
        it, but also when a triggerer that missed its heartbeats catches up and drops the triggers
        another triggerer has taken over: the task is then still deferred, on the other copy, and
        ``what`` must go on. So the task instance's state is asked of the API server (through the
        triggerer's supervisor, as Amazon's and Google's ``safe_to_cancel`` do): ``deferred`` is a
        hand-over and returns ``False``; any other state, or a task instance that no longer exists,
        is a kill and returns ``True``.

        When the state cannot be read (no task instance on the trigger, no supervisor, the API server
        unreachable), this returns ``False`` and logs a warning naming ``what``: a batch left running
        after a kill costs at most what its run costs and can still be cancelled by hand, while a
        batch cancelled by mistake in a hand-over is work lost for good and a failed task.

        :param what: what would be stopped, for the log lines.
        """
        ti = self.task_instance
        try:
            if ti is None:
                raise LookupError("the trigger has no task instance")
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            # A sync call through the supervisor's comms; a thread keeps it off the event loop.
            states = await asyncio.to_thread(
                RuntimeTaskInstance.get_task_states,
                dag_id=ti.dag_id,
                task_ids=[ti.task_id],
                run_ids=[ti.run_id],
                map_index=ti.map_index,
            )
        except Exception as exc:
            self.log.warning(
                "Task killed or handed over, its state unreadable (%s); %s left running.", exc, what
            )
            return False
        # The API's key for a mapped task instance carries its map index.
        key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
        state = states.get(ti.run_id, {}).get(key)
        if state == "deferred":
            self.log.info("Trigger handed over, the task is still deferred; %s left running.", what)
            return False
        return True


class MKA1BatchTrigger(MKA1BaseTrigger):
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
        super().__init__(mka1_conn_id=mka1_conn_id, on_behalf_of=on_behalf_of)
        self.batch_id = batch_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.deadline = deadline
        self.error_budget = error_budget
        self.cancel_on_kill = cancel_on_kill
        self._last_batch: Batch | None = None

    async def wait(self) -> AsyncIterator[TriggerEvent]:
        """
        Poll the batch until it is terminal, the deadline passes or polling fails for good, and yield the one
        event (``success``, ``terminal``, ``timeout`` or ``error``; its fields are described above). A
        transient error is logged and polled past while ``error_budget`` lasts; a permanent one ends the wait.
        """
        poller = BatchPoller(
            self.batch_id,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            error_budget=self.error_budget,
            deadline=self.deadline,
            error_backoff=False,  # the hook's lane probes a failing gateway for every wait on it
        )
        while True:
            try:
                batch = await self._poll(poller)
            except TimeoutError:
                pass  # the deadline passed while the poll waited in its lane: next_sleep says so
            except Exception as exc:
                goes_on = poller.observe_error(exc)
                (self.log.warning if goes_on else self.log.error)("%s", poller.error_line(exc))
                if not goes_on:
                    yield self._error_event(exc, poller)
                    return
            else:
                self._last_batch = batch
                if line := poller.observe(batch):
                    self.log.info("%s", line)
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

    async def _poll(self, poller: BatchPoller) -> Batch:
        """One poll; it may wait for admission in a paced lane, but not past the deadline."""
        poll = self.hook.aget_batch(self.batch_id, urgent=poller.near_end)
        if self.deadline is None:
            return await poll
        return await asyncio.wait_for(poll, timeout=max(0.0, self.deadline - time.time()) + 1.0)

    async def on_kill(self) -> None:
        """
        Cancel the batch when a user kills the deferred task (Airflow 3.3+).

        The triggerer cancels ``run()`` in several situations. When a user marks the deferred task
        failed or success, or clears it, Airflow 3.3+ cancels ``run()`` with a "user action" message and
        then awaits this method: the batch is no longer wanted and is cancelled (if ``cancel_on_kill``).
        When the triggerer shuts down or restarts, ``run()`` is cancelled but this method is not called.
        When a triggerer that missed its heartbeats catches up after another took its triggers over,
        Airflow 3.3 calls this method too, though the task still waits on the other copy: so the batch
        is cancelled only if :meth:`~MKA1BaseTrigger.kill_is_real` says the task is no longer deferred.
        The cancel never lives in ``run()``'s cancellation path or in ``cleanup()``, which run in every
        situation. Airflow before 3.3 never calls this method, so killing a deferred task there leaves
        the batch running.
        """
        if not self.cancel_on_kill:
            self.log.info("Task killed; batch %s left running (cancel_on_kill=False).", self.batch_id)
            return
        if self._last_batch is not None and self._last_batch.is_terminal:
            return
        if not await self.kill_is_real(f"batch {self.batch_id}"):
            return
        try:
            # A copy left behind in a hand-over is told late: the other copy's event may have ended the
            # wait, and the task, already; a terminal batch has nothing to cancel.
            if (batch := await self.hook.aget_batch(self.batch_id)).is_terminal:
                self.log.info("Task no longer deferred; batch %s already %s.", batch.id, batch.status)
                return
            self.log.info("Task killed; cancelling batch %s.", self.batch_id)
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
                # Fields at their default (None, mostly) left out: Airflow logs the whole event.
                "batch": batch.model_dump(mode="json", exclude_defaults=True) if batch is not None else None,
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
