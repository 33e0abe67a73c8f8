"""Wait for an MKA1 batch to finish: :class:`MKA1BatchSensor`. It never creates or cancels a batch itself."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_batches.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
)
from airflow_provider_batches.events import EVENT_TIMEOUT, batch_from_event
from airflow_provider_batches.exceptions import MKA1Error, is_transient
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.outcome import check_batch_outcome, describe_batch, validate_max_failed_ratio
from airflow_provider_batches.polling import WaitOptions, seconds
from airflow_provider_batches.progress import batch_progress, describe_progress

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class MKA1BatchSensor(BaseSensorOperator):
    """
    Wait until an MKA1 batch is terminal, then apply the outcome rule.

    Works in ``poke`` and ``reschedule`` mode (one ``GET /batches/{id}`` per poke) and deferred
    (``deferrable=True``: the wait runs in the triggerer as
    :class:`~airflow_provider_batches.triggers.mka1.MKA1BatchTrigger`, and the sensor's ``timeout``
    becomes the trigger's absolute deadline). On success the XCom ``return_value`` is the final
    batch as a dict, so ``output_file_id`` is one ``xcom_pull`` away. A completed batch with more failed
    requests than ``max_failed_ratio`` allows, or a failed, expired or cancelled batch, fails the task
    without retries (see :func:`~airflow_provider_batches.outcome.check_batch_outcome`); a transient API
    error during a poke is logged and the next poke tries again.

    :param batch_id: the batch to wait on (templated).
    :param mka1_conn_id: the MKA1 connection id.
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of`` (templated); ``None`` uses the connection's.
    :param max_failed_ratio: share of failed requests (0.0 to 1.0) a completed batch may have and still
        succeed. Default 0: any failed request fails the task.
    :param deferrable: wait in the triggerer. Default: ``[operators] default_deferrable``.
    :param max_poll_interval: deferred only: the longest interval between polls in seconds; the trigger
        stretches from ``poke_interval`` toward it while the batch runs.
    :param error_budget: deferred only: consecutive transient API errors the trigger tolerates.
    :param cancel_on_kill: deferred only, Airflow 3.3+: cancel the batch when a user kills the task.

    ``poke_interval``, ``timeout``, ``mode``, ``soft_fail`` and the other arguments of
    ``BaseSensorOperator`` work as usual; ``soft_fail`` also turns a deferred timeout into a skip.
    """

    template_fields: Sequence[str] = ("batch_id", "on_behalf_of")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        batch_id: str,
        mka1_conn_id: str = DEFAULT_CONN_ID,
        on_behalf_of: str | None = None,
        max_failed_ratio: float = 0.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_poll_interval: timedelta | float = DEFAULT_MAX_POLL_INTERVAL,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.mka1_conn_id = mka1_conn_id
        self.on_behalf_of = on_behalf_of
        self.max_failed_ratio = validate_max_failed_ratio(max_failed_ratio)
        self.deferrable = deferrable
        self.max_poll_interval = seconds(max_poll_interval, "max_poll_interval") or DEFAULT_MAX_POLL_INTERVAL
        self.error_budget = error_budget
        self.cancel_on_kill = cancel_on_kill

    @cached_property
    def hook(self) -> MKA1Hook:
        """
        The :class:`~airflow_provider_batches.hooks.mka1.MKA1Hook` of ``mka1_conn_id`` and ``on_behalf_of``,
        made on first use (after templating).
        """
        return MKA1Hook(mka1_conn_id=self.mka1_conn_id, on_behalf_of=self.on_behalf_of)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """
        Read the batch once (one ``GET /batches/{id}``), log its progress and apply the outcome rule.

        :return: ``False`` while the batch is not terminal, or could not be read for a transient reason (see
            :func:`~airflow_provider_batches.exceptions.is_transient`: the next poke tries again); a
            ``PokeReturnValue`` carrying the batch as a dict once it completed within ``max_failed_ratio``.
        :raises MKA1BatchOutcomeError: the batch failed, expired or was cancelled, or too many of its requests
            failed; final (no retry).
        :raises MKA1Error: a permanent API error (e.g. 401, 404).
        """
        try:
            batch = self.hook.get_batch(self.batch_id)
        except MKA1Error as exc:
            if is_transient(exc):
                self.log.warning("Could not read batch %s; the next poke tries again: %s", self.batch_id, exc)
                return False
            raise
        # From the batch alone: a reschedule-mode poke runs in a new process and remembers nothing.
        progress = batch_progress(batch, time.time())
        still = progress.in_status_for is not None and progress.in_status_for >= self.poke_interval
        self.log.info("Batch %s: %s.", batch.id, describe_progress(progress, still=still))
        if not check_batch_outcome(batch, self.max_failed_ratio):
            return False
        return PokeReturnValue(is_done=True, xcom_value=batch.model_dump(mode="json"))

    def execute(self, context: Context) -> Any:
        """
        Not deferrable: wait as any sensor does, in ``poke`` or ``reschedule`` mode. Deferrable: poke once (a
        finished batch needs no triggerer), then defer to
        :class:`~airflow_provider_batches.triggers.mka1.MKA1BatchTrigger`, the sensor's ``timeout`` its
        absolute deadline, and resume in :meth:`execute_complete`.

        :return: the final batch as a dict (the ``return_value`` XCom).
        """
        if not self.deferrable:
            return super().execute(context)
        # One poke first: a batch that is already finished needs no trip through the triggerer.
        done = self.poke(context)
        if isinstance(done, PokeReturnValue):
            return done.xcom_value
        wait = WaitOptions.of(
            mka1_conn_id=self.mka1_conn_id,
            on_behalf_of=self.on_behalf_of,
            poll_interval=self.poke_interval,
            max_poll_interval=self.max_poll_interval,
            timeout=self.timeout,
            error_budget=self.error_budget,
            cancel_on_kill=self.cancel_on_kill,
        )
        # Imported only to defer: Airflow's trigger machinery would add ~7 ms to every DAG parse.
        from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger

        self.defer(
            trigger=wait.trigger(MKA1BatchTrigger, batch_id=self.batch_id), method_name="execute_complete"
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Turn the trigger's event into the sensor's result: the final batch as a dict."""
        if isinstance(event, dict) and event.get("status") == EVENT_TIMEOUT:
            message = f"Sensor has timed out: {event.get('message')}"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        batch = batch_from_event(event)
        if not check_batch_outcome(batch, self.max_failed_ratio):
            raise MKA1Error(f"The trigger ended while batch {batch.id} is {describe_batch(batch)}.")
        self.log.info("Batch %s completed; output file %s.", batch.id, batch.output_file_id)
        return batch.model_dump(mode="json")
