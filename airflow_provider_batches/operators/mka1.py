"""
The MKA1 operators: submit or attach to a batch and wait for it (:class:`MKA1BatchOperator`), download a
file (:class:`MKA1DownloadFileOperator`). They ask the hook for every call and rule; they decide nothing
about reattaching or retries.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowSkipException, BaseOperator, conf

from airflow_provider_batches.constants import (
    DEFAULT_COMPLETION_WINDOW,
    DEFAULT_CONN_ID,
    DEFAULT_ENDPOINT,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    ON_INPUT_CHANGE,
)
from airflow_provider_batches.events import EVENT_TIMEOUT, batch_from_event
from airflow_provider_batches.exceptions import MKA1Error, MKA1InvalidInputError
from airflow_provider_batches.hooks.mka1 import MKA1Hook, idempotency_key_for
from airflow_provider_batches.models import Batch
from airflow_provider_batches.outcome import check_batch_outcome, describe_batch, validate_max_failed_ratio
from airflow_provider_batches.polling import WaitOptions

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath
    from airflow.providers.openlineage.extractors import OperatorLineage

XCOM_BATCH_ID = "batch_id"
XCOM_ERROR_FILE_ID = "error_file_id"
XCOM_REQUEST_COUNTS = "request_counts"


class MKA1BatchOperator(BaseOperator):
    """
    Create an MKA1 batch (or attach to one) and, by default, wait until it is terminal.

    Give exactly one of ``batch_id`` (attach to an existing batch), ``input_file_id`` (a file already
    uploaded with purpose ``batch``) or ``input_path`` (a local path or ``ObjectStoragePath``, uploaded
    first). A created batch carries an idempotency key derived from the task instance (dag id, run id,
    task id, map index): a retry of the task reattaches to the batch its earlier try created instead of
    creating and billing a second one.

    XComs: ``batch_id`` is pushed as soon as the batch is known, before any wait. After the wait, the
    ``return_value`` is the batch's ``output_file_id`` and ``error_file_id`` (when the batch has one) and
    ``request_counts`` are pushed under their own keys. The outcome rule
    (:func:`~airflow_provider_batches.outcome.check_batch_outcome`) decides success.

    :param batch_id: attach to this batch instead of creating one (templated).
    :param input_file_id: create the batch from this uploaded file (templated).
    :param input_path: upload this JSONL file first, then create the batch from it (templated): a local
        path or an ``ObjectStoragePath`` (``s3://...``, ``file://...``).
    :param endpoint: the API every line calls (templated): ``/v1/chat/completions``, ``/v1/embeddings``,
        ``/v1/images/generations`` or ``/v1/responses``.
    :param metadata: string key/value pairs stored on the batch (templated).
    :param max_concurrency: the most requests of this batch the gateway runs at once; ``None`` for its
        default.
    :param completion_window: the batch's completion window; the API accepts only ``"24h"``.
    :param mka1_conn_id: the MKA1 connection id.
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of`` (templated); ``None`` uses the connection's.
    :param wait_for_completion: wait until the batch is terminal (default). If ``False``, the task ends
        once the batch exists; wait with :class:`~airflow_provider_batches.sensors.mka1.MKA1BatchSensor`.
    :param deferrable: wait in the triggerer instead of a worker slot. Default:
        ``[operators] default_deferrable``.
    :param poll_interval: the shortest interval between polls, in seconds.
    :param max_poll_interval: the longest interval between polls, in seconds; polling stretches toward it
        while the batch runs, based on its progress.
    :param timeout: the longest wait, in seconds or a ``timedelta``; ``None`` waits until the batch is
        terminal (at most its completion window). A timeout fails the task (retryable: a retry
        reattaches and waits again).
    :param error_budget: consecutive transient API errors (429, 5xx, network) tolerated while waiting.
    :param max_failed_ratio: share of failed requests (0.0 to 1.0) a completed batch may have and still
        succeed. Default 0: any failed request fails the task.
    :param cancel_on_kill: cancel the batch when the task is killed while it waits (on a worker; deferred,
        on Airflow 3.3+).
    :param on_input_change: when the batch an earlier try created was made from another input (the file
        at ``input_path`` changed, or another ``input_file_id``): ``"cancel_and_resubmit"`` (cancel it
        if it is unfinished, create a new one) or ``"fail"`` (fail before anything is sent).
    """

    template_fields: Sequence[str] = (
        "batch_id",
        "input_file_id",
        "input_path",
        "endpoint",
        "metadata",
        "on_behalf_of",
    )
    template_fields_renderers = {"metadata": "json"}
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        batch_id: str | None = None,
        input_file_id: str | None = None,
        input_path: str | os.PathLike[str] | ObjectStoragePath | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        metadata: dict[str, str] | None = None,
        max_concurrency: int | None = None,
        completion_window: str = DEFAULT_COMPLETION_WINDOW,
        mka1_conn_id: str = DEFAULT_CONN_ID,
        on_behalf_of: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: timedelta | float = DEFAULT_MAX_POLL_INTERVAL,
        timeout: timedelta | float | None = None,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        max_failed_ratio: float = 0.0,
        cancel_on_kill: bool = True,
        on_input_change: str = "cancel_and_resubmit",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = [name for name, value in _sources(batch_id, input_file_id, input_path) if value is not None]
        if len(given) != 1:
            raise ValueError(
                "MKA1BatchOperator needs exactly one of batch_id, input_file_id or input_path; "
                f"got {', '.join(given) or 'none'}."
            )
        self.batch_id = batch_id
        self.input_file_id = input_file_id
        self.input_path = input_path
        self.endpoint = endpoint
        self.metadata = metadata
        self.max_concurrency = max_concurrency
        self.completion_window = completion_window
        self.mka1_conn_id = mka1_conn_id
        self.on_behalf_of = on_behalf_of
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        wait = WaitOptions.of(
            mka1_conn_id=mka1_conn_id,
            on_behalf_of=on_behalf_of,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            timeout=timeout,
            error_budget=error_budget,
            cancel_on_kill=cancel_on_kill,
        )
        self.poll_interval = wait.poll_interval
        self.max_poll_interval = wait.max_poll_interval
        self.timeout = wait.timeout
        self.error_budget = error_budget
        self.max_failed_ratio = validate_max_failed_ratio(max_failed_ratio)
        self.cancel_on_kill = cancel_on_kill
        if on_input_change not in ON_INPUT_CHANGE:
            raise ValueError(f"on_input_change must be one of {ON_INPUT_CHANGE}, got {on_input_change!r}")
        self.on_input_change = on_input_change
        # The batch a synchronous wait is on, for on_kill.
        self._waiting_on: str | None = None
        # The last state of this task's batch, for lineage.
        self._batch: Batch | None = None

    @cached_property
    def hook(self) -> MKA1Hook:
        """
        The :class:`~airflow_provider_batches.hooks.mka1.MKA1Hook` of ``mka1_conn_id`` and ``on_behalf_of``,
        made on first use (after templating).
        """
        return MKA1Hook(mka1_conn_id=self.mka1_conn_id, on_behalf_of=self.on_behalf_of)

    def execute(self, context: Context) -> str | None:
        """
        Attach to ``batch_id``, or create the batch (uploading ``input_path`` first), reattaching to the one
        an earlier try created; push its id as the ``batch_id`` XCom at once. Then, unless
        ``wait_for_completion=False``, wait until it is terminal: polling in this worker, or deferred to
        :class:`~airflow_provider_batches.triggers.mka1.MKA1BatchTrigger` (resumed in
        :meth:`execute_complete`). After the wait, ``error_file_id`` (when there is one) and
        ``request_counts`` are pushed and the outcome rule decides.

        :return: the batch's ``output_file_id``; ``None`` while it has none (as is usual with
            ``wait_for_completion=False``).
        :raises MKA1BatchOutcomeError: the batch failed, expired or was cancelled, or too many of its requests
            failed; final (no retry).
        :raises MKA1Error: the ``timeout`` passed, or polling failed for good (the task's retries reattach).
        """
        batch = self._batch = self._submit_or_attach(context)
        context["ti"].xcom_push(key=XCOM_BATCH_ID, value=batch.id)
        if not self.wait_for_completion:
            self.log.info("Batch %s is %s; not waiting for it.", batch.id, describe_batch(batch))
            return batch.output_file_id
        if self.deferrable and not batch.is_terminal:
            # Imported only to defer: Airflow's trigger machinery would add ~7 ms to every DAG parse.
            from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger

            self.defer(
                trigger=self._wait_options().trigger(MKA1BatchTrigger, batch_id=batch.id),
                method_name="execute_complete",
            )
        return self._finish(context, self._wait(batch))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str | None:
        """Turn the trigger's event into the task's result: the batch's ``output_file_id``."""
        if isinstance(event, dict) and event.get("status") == EVENT_TIMEOUT:
            raise MKA1Error(f"Timed out waiting for the batch: {event.get('message')}")
        return self._finish(context, batch_from_event(event))

    def on_kill(self) -> None:
        """
        Cancel the batch (if ``cancel_on_kill``) when the task is killed while it waits in this worker; a
        failed cancel is logged, not raised. Nothing is cancelled outside that wait (while submitting, or with
        ``wait_for_completion=False``); a deferred wait is cancelled by the trigger's
        :meth:`~airflow_provider_batches.triggers.mka1.MKA1BatchTrigger.on_kill` (Airflow 3.3+).
        """
        batch_id = self._waiting_on
        if not batch_id or not self.cancel_on_kill:
            return
        self.log.info("Task killed; cancelling batch %s.", batch_id)
        try:
            batch = self.hook.cancel_batch(batch_id)
        except MKA1Error as exc:
            self.log.warning("Could not cancel batch %s: %s", batch_id, exc)
            return
        self.log.info("Batch %s is now %s.", batch.id, describe_batch(batch))

    def _submit_or_attach(self, context: Context) -> Batch:
        if self.batch_id:
            batch = self.hook.get_batch(self.batch_id)
            self.log.info("Attached to batch %s: %s.", batch.id, describe_batch(batch))
            return batch
        if not self.input_file_id and not self.input_path:
            raise MKA1InvalidInputError("No batch_id, input_file_id or input_path to start from.")
        batch = self.hook.submit_batch(
            self.endpoint,
            input_file_id=self.input_file_id or None,
            input_path=None if self.input_file_id else self.input_path,
            completion_window=self.completion_window,
            metadata=self.metadata,
            max_concurrency=self.max_concurrency,
            idempotency_key=idempotency_key_for(context),
            on_input_change=self.on_input_change,
        )
        return batch

    def _wait_options(self) -> WaitOptions:
        # Read at run time: the attributes may have been changed (or templated) since __init__.
        return WaitOptions.of(
            mka1_conn_id=self.mka1_conn_id,
            on_behalf_of=self.on_behalf_of,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            timeout=self.timeout,
            error_budget=self.error_budget,
            cancel_on_kill=self.cancel_on_kill,
        )

    def _wait(self, batch: Batch) -> Batch:
        poller = self._wait_options().poller(batch.id)
        self._log_progress(poller.observe(batch))
        self._waiting_on = batch.id
        try:
            while not batch.is_terminal:
                delay = poller.next_sleep()
                if delay is None:
                    raise MKA1Error(
                        f"Timed out after {self.timeout:g} s waiting for batch {batch.id}; "
                        f"it is still {describe_batch(batch)}."
                    )
                time.sleep(delay)
                try:
                    batch = self.hook.get_batch(batch.id)
                except MKA1Error as exc:
                    goes_on = poller.observe_error(exc)
                    (self.log.warning if goes_on else self.log.error)("%s", poller.error_line(exc))
                    if not goes_on:
                        raise
                else:
                    self._log_progress(poller.observe(batch))
        finally:
            self._waiting_on = None
        return batch

    def _log_progress(self, line: str | None) -> None:
        if line:
            self.log.info("%s", line)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """
        Lineage, as the official providers give it: inputs the input path and the MKA1 input file,
        outputs the output and error files, and the ``mka1_batch`` run facet (batch id, endpoint,
        request counts). Token usage is not in a batch object: read it from the results.
        """
        try:
            from airflow_provider_batches import lineage
        except ImportError:
            self.log.debug("OpenLineage is not installed; no lineage.")
            return None
        batch, base_url = self._batch, self.hook.settings.base_url
        inputs = [lineage.path_dataset(self.input_path)] if self.input_path else []
        input_file_id = batch.input_file_id if batch is not None else self.input_file_id
        if input_file_id:
            inputs.append(lineage.file_dataset(base_url, input_file_id))
        if batch is None:
            return lineage.lineage(inputs=inputs, outputs=[])
        files = [f for f in (batch.output_file_id, batch.error_file_id) if f]
        return lineage.lineage(
            inputs=inputs,
            outputs=[lineage.file_dataset(base_url, f) for f in files],
            batch_ids=[batch.id],
            endpoint=batch.endpoint,
            request_counts=batch.request_counts.model_dump(mode="json"),
        )

    def _finish(self, context: Context, batch: Batch) -> str | None:
        self._batch = batch
        ti = context["ti"]
        if batch.error_file_id:
            # Not None: Airflow 3.0.6's execution API refuses an XCom of null (422); a pull of the
            # missing key gives None all the same.
            ti.xcom_push(key=XCOM_ERROR_FILE_ID, value=batch.error_file_id)
        ti.xcom_push(key=XCOM_REQUEST_COUNTS, value=batch.request_counts.model_dump(mode="json"))
        if not check_batch_outcome(batch, self.max_failed_ratio):
            raise MKA1Error(f"Stopped waiting while batch {batch.id} is {describe_batch(batch)}.")
        self.log.info("Batch %s completed; output file %s.", batch.id, batch.output_file_id)
        return batch.output_file_id


def _sources(*values: object) -> zip[tuple[str, object]]:
    return zip(("batch_id", "input_file_id", "input_path"), values, strict=True)


class MKA1DownloadFileOperator(BaseOperator):
    """
    Stream an MKA1 file (for example a batch's output file) to a local path or object storage.

    The file is written atomically: the destination appears complete or not at all. The ``return_value``
    XCom is ``{"path": str, "bytes": int, "lines": int}``.

    :param file_id: the file to download (templated), e.g. ``"{{ ti.xcom_pull(task_ids='batch') }}"`` or
        ``batch_task.output``.
    :param destination: a local path or an ``ObjectStoragePath`` (``s3://...``, ``file://...``,
        ``memory://...``) (templated).
    :param mka1_conn_id: the MKA1 connection id.
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of`` (templated); ``None`` uses the connection's.
    :param skip_if_no_file: when ``file_id`` is empty (a batch whose requests all failed has no output
        file), skip the task instead of failing it.
    """

    template_fields: Sequence[str] = ("file_id", "destination", "on_behalf_of")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        file_id: str | None,
        destination: str | os.PathLike[str] | ObjectStoragePath,
        mka1_conn_id: str = DEFAULT_CONN_ID,
        on_behalf_of: str | None = None,
        skip_if_no_file: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.file_id = file_id
        self.destination = destination
        self.mka1_conn_id = mka1_conn_id
        self.on_behalf_of = on_behalf_of
        self.skip_if_no_file = skip_if_no_file
        self._written: str | None = None  # where the file went, for lineage

    @cached_property
    def hook(self) -> MKA1Hook:
        """
        The :class:`~airflow_provider_batches.hooks.mka1.MKA1Hook` of ``mka1_conn_id`` and ``on_behalf_of``,
        made on first use (after templating).
        """
        return MKA1Hook(mka1_conn_id=self.mka1_conn_id, on_behalf_of=self.on_behalf_of)

    def execute(self, context: Context) -> dict[str, Any]:
        """
        Stream the file to ``destination``
        (:meth:`~airflow_provider_batches.hooks.mka1.MKA1Hook.download_file`): it appears there complete or
        not at all.

        :return: ``{"path": str, "bytes": int, "lines": int}``, the ``return_value`` XCom.
        :raises AirflowSkipException: ``file_id`` is empty (or the ``"None"`` an empty XCom renders as) and
            ``skip_if_no_file`` is set.
        :raises MKA1InvalidInputError: the same without ``skip_if_no_file``, or a malformed ``file_id`` or
            ``destination``; nothing was sent.
        """
        file_id = self.file_id
        # A template over an empty XCom renders as the string "None". Anything else goes to the hook as
        # is, which refuses a malformed id (padded, control characters) before any request.
        if file_id is None or file_id in ("", "None"):
            message = (
                f"No file to download (file_id={self.file_id!r}): the batch produced no output file, "
                "for example because every request failed; its error_file_id holds the failed lines."
            )
            if self.skip_if_no_file:
                raise AirflowSkipException(message)
            raise MKA1InvalidInputError(message)
        result = self.hook.download_file(file_id, self.destination)  # the hook logs the download
        self._written = str(result.path)
        return {"path": str(result.path), "bytes": result.bytes, "lines": result.lines}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """Lineage: input the MKA1 file, output the local or object storage path it was written to."""
        try:
            from airflow_provider_batches import lineage
        except ImportError:
            self.log.debug("OpenLineage is not installed; no lineage.")
            return None
        if not self.file_id or self.file_id == "None":
            return lineage.lineage(inputs=[], outputs=[])
        inputs = [lineage.file_dataset(self.hook.settings.base_url, self.file_id)]
        outputs = [lineage.path_dataset(self._written)] if self._written else []
        return lineage.lineage(inputs=inputs, outputs=outputs)


def __getattr__(name: str) -> Any:
    # MKA1BatchJobOperator lives in its own module; imported from here on first use, as users expect.
    if name == "MKA1BatchJobOperator":
        from airflow_provider_batches.operators.mka1_job import MKA1BatchJobOperator

        return MKA1BatchJobOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
