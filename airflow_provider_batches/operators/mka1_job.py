"""Answer a dataset of requests with as many MKA1 batches as it takes: :class:`MKA1BatchJobOperator`.

Task logic only: the input, sharding, index, resubmission rule and merge live in
:mod:`airflow_provider_batches.jobs`; every API call goes through :class:`MKA1Hook`; waits use the
shared polling policy; success is decided by the one outcome rule.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import Asset, BaseOperator, ObjectStoragePath, conf

from airflow_provider_batches.constants import (
    DEFAULT_CONN_ID,
    DEFAULT_ENDPOINT,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    ON_INPUT_CHANGE,
)
from airflow_provider_batches.events import EVENT_SUCCESS, EVENT_TIMEOUT
from airflow_provider_batches.exceptions import (
    MKA1BatchPartialFailureError,
    MKA1Error,
    error_from_event,
)
from airflow_provider_batches.hooks.mka1 import MKA1Hook, idempotency_key_for
from airflow_provider_batches.jobs import identity
from airflow_provider_batches.jobs.inputs import check_requests_argument, structured_output_params
from airflow_provider_batches.jobs.merge import MergeCounts, resolve_dir
from airflow_provider_batches.jobs.resubmit import DEFAULT_RESUBMIT_CODES
from airflow_provider_batches.jobs.run import JobRun, JobSpec, cancel_batches
from airflow_provider_batches.jobs.shards import (
    DEFAULT_MAX_BYTES_PER_BATCH,
    DEFAULT_MAX_REQUESTS_PER_BATCH,
    check_limits,
)
from airflow_provider_batches.jobs.waiting import JobWait
from airflow_provider_batches.models import Batch, BatchStatus
from airflow_provider_batches.outcome import check_batch_outcome, validate_max_failed_ratio
from airflow_provider_batches.polling import seconds

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage
    from pydantic import BaseModel

XCOM_MANIFEST = "manifest"
_NOT_RUNNING = ("cancelling", "cancelled", "completed", "failed", "expired")


class MKA1BatchJobOperator(BaseOperator):
    """
    Answer every request of a dataset through as many MKA1 batches as it takes; one results row each.

    The input is checked line by line before anything is sent, split at line boundaries into shards
    within ``max_requests_per_batch`` and ``max_bytes_per_batch``, and each shard becomes a batch whose
    idempotency key derives from the task instance, the round, the shard and the input's fingerprint:
    a retry or a cleared task re-attaches to every batch already made. One wait covers every batch of a
    round; requests that failed transiently or never ran go into the next round, up to
    ``resubmit_rounds``. Then ``results.jsonl`` in ``result_path`` gets exactly one row per request, in
    input order, and ``manifest.json`` beside it; the manifest is the ``return_value`` (and the
    ``manifest`` XCom, pushed also when the job fails its ``max_failed_ratio``).

    :param requests: a JSONL file of request lines (local path or ``ObjectStoragePath``/URL), a list of
        request dicts (``{"custom_id", "body"}``; ``method`` and ``url`` filled in), or a list of prompt
        strings (with ``model``) (templated).
    :param endpoint: the API every request calls (templated).
    :param result_path: the directory of the results (local, or any ``ObjectStoragePath``) (templated).
    :param model: the model of prompt-string requests (templated).
    :param system_prompt: the system message of prompt-string requests (templated).
    :param request_params: body fields merged into every prompt-string request (templated).
    :param max_requests_per_batch: the most requests in one batch.
    :param max_bytes_per_batch: the most bytes of request lines in one batch.
    :param resubmit_rounds: how many rounds of resubmission follow the first one.
    :param resubmit_codes: line error codes that are transient (default
        :data:`~airflow_provider_batches.jobs.resubmit.DEFAULT_RESUBMIT_CODES`); 429 and 5xx always are.
    :param max_failed_ratio: share of requests (0.0 to 1.0) that may end without an answer.
    :param response_model: a pydantic model the assistant message of each answer is parsed into.
    :param keep_raw_files: copy every batch's output and error file to ``result_path/raw/``.
    :param on_input_change: when batches of this task instance made from another input exist:
        ``"cancel_and_resubmit"`` (cancel the unfinished ones, start over) or ``"fail"``.
    :param metadata: string pairs stored on every batch (templated); keys ``airflow_*`` are the job's.
    :param max_concurrency: the most requests of one batch the gateway runs at once.
    :param mka1_conn_id: the MKA1 connection id.
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of`` (templated).
    :param deferrable: wait in the triggerer. Default: ``[operators] default_deferrable``.
    :param poll_interval: the shortest interval between polls of a batch, in seconds.
    :param max_poll_interval: the longest interval between polls of a batch, in seconds.
    :param timeout: the longest wait of the job (all rounds), seconds or ``timedelta``; ``None``: no limit.
    :param error_budget: consecutive transient API errors tolerated per batch while waiting.
    :param stall_timeout: cancel a running batch whose counts have not moved for this long (its
        unfinished requests go into the next round); ``None``: never.
    :param cancel_on_kill: cancel the unfinished batches when the task is killed.
    :param cancel_on_timeout: cancel the unfinished batches when ``timeout`` passes; ``False`` leaves
        them running, and a retry re-attaches and waits again.
    :param scratch_dir: where the job's scratch files go (default: the system's temporary directory).
    :param results_asset: an ``Asset`` (``Dataset`` on Airflow 2) or its URI: added to the task's
        ``outlets``, its event's ``extra`` carries the manifest's ``counts``, ``results`` and ``manifest``
        (the URIs), so that DAGs scheduled on it run on new results.
    """

    template_fields: Sequence[str] = (
        "requests",
        "endpoint",
        "result_path",
        "model",
        "system_prompt",
        "request_params",
        "metadata",
        "on_behalf_of",
    )
    template_fields_renderers = {"request_params": "json", "metadata": "json"}
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        requests: Any,
        result_path: Any,
        endpoint: str = DEFAULT_ENDPOINT,
        model: str | None = None,
        system_prompt: str | None = None,
        request_params: dict[str, Any] | None = None,
        max_requests_per_batch: int = DEFAULT_MAX_REQUESTS_PER_BATCH,
        max_bytes_per_batch: int = DEFAULT_MAX_BYTES_PER_BATCH,
        resubmit_rounds: int = 2,
        resubmit_codes: Collection[str] | None = None,
        max_failed_ratio: float = 0.0,
        response_model: type[BaseModel] | None = None,
        keep_raw_files: bool = False,
        on_input_change: str = "cancel_and_resubmit",
        metadata: dict[str, str] | None = None,
        max_concurrency: int | None = None,
        mka1_conn_id: str = DEFAULT_CONN_ID,
        on_behalf_of: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: timedelta | float = DEFAULT_MAX_POLL_INTERVAL,
        timeout: timedelta | float | None = None,
        error_budget: int = DEFAULT_ERROR_BUDGET,
        stall_timeout: timedelta | float | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        scratch_dir: str | None = None,
        results_asset: Asset | str | None = None,
        **kwargs: Any,
    ) -> None:
        results_asset = Asset(results_asset) if isinstance(results_asset, str) else results_asset
        if results_asset is not None:
            outlets = kwargs.get("outlets") or []
            kwargs["outlets"] = [*(outlets if isinstance(outlets, list) else [outlets]), results_asset]
        super().__init__(**kwargs)
        check_limits(max_requests_per_batch, max_bytes_per_batch)
        if isinstance(resubmit_rounds, bool) or not isinstance(resubmit_rounds, int) or resubmit_rounds < 0:
            raise ValueError(f"resubmit_rounds must be an int >= 0, got {resubmit_rounds!r}")
        if on_input_change not in ON_INPUT_CHANGE:
            raise ValueError(f"on_input_change must be one of {ON_INPUT_CHANGE}, got {on_input_change!r}")
        if response_model is not None and not (
            isinstance(response_model, type) and hasattr(response_model, "model_validate_json")
        ):
            raise ValueError(f"response_model must be a pydantic model class, got {response_model!r}")
        identity.check_user_metadata(metadata)
        self.requests = requests
        self.result_path = result_path
        self.endpoint = endpoint
        self.model = model
        self.system_prompt = system_prompt
        self.request_params = request_params
        self.max_requests_per_batch = max_requests_per_batch
        self.max_bytes_per_batch = max_bytes_per_batch
        self.resubmit_rounds = resubmit_rounds
        self.resubmit_codes = frozenset(DEFAULT_RESUBMIT_CODES if resubmit_codes is None else resubmit_codes)
        self.max_failed_ratio = validate_max_failed_ratio(max_failed_ratio)
        self.response_model = response_model
        self.keep_raw_files = keep_raw_files
        self.on_input_change = on_input_change
        self.metadata = metadata
        self.max_concurrency = max_concurrency
        self.mka1_conn_id = mka1_conn_id
        self.on_behalf_of = on_behalf_of
        self.deferrable = deferrable
        self.poll_interval = seconds(poll_interval, "poll_interval") or DEFAULT_POLL_INTERVAL
        self.max_poll_interval = seconds(max_poll_interval, "max_poll_interval") or DEFAULT_MAX_POLL_INTERVAL
        self.timeout = seconds(timeout, "timeout")
        self.error_budget = error_budget
        self.stall_timeout = seconds(stall_timeout, "stall_timeout")
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.scratch_dir = scratch_dir
        self._waiting_on: list[str] = []
        self.results_asset = results_asset
        self._manifest: dict[str, Any] | None = None  # for lineage

    @cached_property
    def hook(self) -> MKA1Hook:
        """
        The :class:`~airflow_provider_batches.hooks.mka1.MKA1Hook` of ``mka1_conn_id`` and ``on_behalf_of``,
        made on first use (after templating).
        """
        return MKA1Hook(mka1_conn_id=self.mka1_conn_id, on_behalf_of=self.on_behalf_of)

    # -- Airflow entry points ---------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """
        Run the job, replayed from its input and the batches earlier tries made (reattached to, never
        submitted twice): check and shard the input, submit each round's batches and wait for them (polling
        here, or deferred to :class:`~airflow_provider_batches.triggers.mka1_job.MKA1BatchJobTrigger` and
        resumed in :meth:`execute_complete`), resubmit what may succeed another time, then write the results
        and the manifest. The ``timeout`` runs from now.

        :return: the manifest, also pushed as the ``manifest`` XCom.
        :raises MKA1InvalidInputError: the input cannot be read or a line is not valid; nothing was sent.
        :raises MKA1BatchPartialFailureError: more requests than ``max_failed_ratio`` allows have no answer;
            the results and the manifest are written.
        :raises MKA1Error: the ``timeout`` passed (the unfinished batches cancelled if ``cancel_on_timeout``),
            or polling failed for good.
        """
        started = time.time()
        deadline = started + self.timeout if self.timeout is not None else None
        return self._run(context, deadline, started)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None,
        deadline: float | None = None,
        started: float = 0.0,
    ) -> dict[str, Any]:
        """Resume after the job trigger fired: go on with the job where the batches say it is."""
        event = event or {}
        status = event.get("status")
        if status == EVENT_TIMEOUT:
            self._give_up(event.get("batches") or {}, str(event.get("message")))
        if status != EVENT_SUCCESS:
            error = event.get("error")
            message = str(event.get("message") or f"Unexpected event from MKA1BatchJobTrigger: {event!r}")
            raise error_from_event(error, message) if isinstance(error, dict) else MKA1Error(message)
        deadline = event.get("deadline", deadline)
        return self._run(context, deadline, event.get("started") or started or time.time())

    def on_kill(self) -> None:
        """
        Cancel the batches of the round (if ``cancel_on_kill``) when the task is killed while it waits in this
        worker; a failed cancel is logged, not raised. A deferred wait is cancelled by the trigger's
        :meth:`~airflow_provider_batches.triggers.mka1_job.MKA1BatchJobTrigger.on_kill` (Airflow 3.3+).
        """
        if self.cancel_on_kill and self._waiting_on:
            self._cancel(self._waiting_on, "the task was killed")

    # -- the job ----------------------------------------------------------------------------------------

    def _run(self, context: Context, deadline: float | None, started: float) -> dict[str, Any]:
        """Replay the job from its input and its batches, round by round, and go on from where it is."""
        check_requests_argument(self.requests, self.model, self.endpoint)
        spec = JobSpec(
            requests=self.requests,
            endpoint=self.endpoint,
            result_dir=resolve_dir(self.result_path),
            max_requests=self.max_requests_per_batch,
            max_bytes=self.max_bytes_per_batch,
            resubmit_rounds=self.resubmit_rounds,
            resubmit_codes=self.resubmit_codes,
            model=self.model,
            system_prompt=self.system_prompt,
            request_params=self.prompt_request_params(),
            metadata=self.metadata,
            max_concurrency=self.max_concurrency,
            response_model=self.response_model,
            keep_raw_files=self.keep_raw_files,
            on_input_change=self.on_input_change,
        )
        self.hook.batch_options(self.endpoint, metadata=self.metadata, max_concurrency=self.max_concurrency)
        key = idempotency_key_for(context)
        with JobRun.prepare(spec, self.hook, key, self.scratch_dir, self.log) as job:
            shards = job.shards0
            round_no = 0
            while shards:
                batches = job.submit_round(round_no, shards)
                if not all(b.is_terminal for b in batches.values()):
                    batches = self._wait(batches, round_no, deadline, started)
                shards = job.collect_round(round_no, batches)
                round_no += 1
            manifest, counts = job.write(started)
        context["ti"].xcom_push(key=XCOM_MANIFEST, value=manifest)
        self._manifest = manifest
        if self.results_asset is not None:
            # Emitted only if the task succeeds, i.e. within max_failed_ratio.
            extra = {key: manifest[key] for key in ("counts", "results", "manifest")}
            context["outlet_events"][self.results_asset].extra.update(extra)
        self.log.info(
            "Job done: %d of %d requests answered over %d rounds; results in %s.",
            counts.succeeded,
            counts.requests,
            manifest["rounds"],
            manifest["results"],
        )
        self._check_outcome(key, counts, manifest["results"])
        return manifest

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """
        Lineage: input the requests file (when ``requests`` is a path), output the results file, and
        the ``mka1_batch`` run facet: every batch of every round, the request counts, the token usage.
        """
        try:
            from airflow_provider_batches import lineage
        except ImportError:
            self.log.debug("OpenLineage is not installed; no lineage.")
            return None
        is_path = isinstance(self.requests, (str, os.PathLike, ObjectStoragePath))
        inputs = [lineage.path_dataset(self.requests)] if is_path else []
        manifest = self._manifest
        if manifest is None:
            return lineage.lineage(inputs=inputs, outputs=[])
        counts = manifest["counts"]
        return lineage.lineage(
            inputs=inputs,
            outputs=[lineage.path_dataset(manifest["results"])],
            batch_ids=[batch_id for round_ids in manifest["batches"] for batch_id in round_ids],
            endpoint=self.endpoint,
            request_counts={
                "total": counts["requests"],
                "completed": counts["succeeded"],
                "failed": counts["requests"] - counts["succeeded"],
            },
            usage=manifest["usage"],
        )

    def prompt_request_params(self) -> dict[str, Any]:
        """The body fields every prompt-string request gets: structured output's, then ``request_params``."""
        structured = (
            structured_output_params(self.endpoint, self.response_model) if self.response_model else {}
        )
        return {**structured, **(self.request_params or {})}

    def _wait(
        self, batches: dict[int, Batch], round_no: int, deadline: float | None, started: float
    ) -> dict[int, Batch]:
        ids = [b.id for b in batches.values()]
        if self.deferrable:
            # Imported only to defer: Airflow's trigger machinery would add ~7 ms to every DAG parse.
            from airflow_provider_batches.triggers.mka1_job import MKA1BatchJobTrigger

            self.defer(
                trigger=MKA1BatchJobTrigger(
                    batch_ids=ids,
                    round_no=round_no,
                    mka1_conn_id=self.mka1_conn_id,
                    on_behalf_of=self.on_behalf_of,
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    deadline=deadline,
                    error_budget=self.error_budget,
                    stall_timeout=self.stall_timeout,
                    cancel_on_kill=self.cancel_on_kill,
                    started=started,
                ),
                method_name="execute_complete",
                kwargs={"deadline": deadline, "started": started},
            )
        wait = JobWait(
            ids,
            round_no=round_no,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            error_budget=self.error_budget,
            deadline=deadline,
            stall_timeout=self.stall_timeout,
            logger=self.log,
        )
        for batch in batches.values():
            wait.observe(batch)
        stalled: set[str] = set()
        self._waiting_on = ids
        try:
            while not wait.done:
                plan = wait.next_polls()
                if plan is None:
                    self._give_up(wait.batches, f"Round {round_no} was not done by the deadline.")
                    raise AssertionError("not reached")
                due, delay = plan
                time.sleep(delay)
                for batch_id in due:
                    try:
                        wait.observe(self.hook.get_batch(batch_id))
                    except MKA1Error as exc:
                        if not wait.observe_error(batch_id, exc):
                            raise
                for batch_id in set(wait.stalled()) - stalled:
                    stalled.add(batch_id)
                    self._cancel(
                        [batch_id], f"its request counts have not moved for {self.stall_timeout:g} s"
                    )
        finally:
            self._waiting_on = []
        final = wait.batches
        return {shard: final[b.id] or b for shard, b in batches.items()}

    def _give_up(self, batches: dict[str, Any], message: str) -> None:
        unfinished = [
            batch_id
            for batch_id, batch in batches.items()
            if batch is None or not Batch.model_validate(batch).is_terminal
        ]
        if self.cancel_on_timeout and unfinished:
            self._cancel(unfinished, "the job's timeout passed (cancel_on_timeout=True)")
            message += f" Cancelled {len(unfinished)} unfinished batches; a retry collects what they did."
        elif unfinished:
            message += (
                f" {len(unfinished)} batches left running (cancel_on_timeout=False); a retry waits again."
            )
        raise MKA1Error(f"Timed out: {message}")

    def _cancel(self, batch_ids: list[str], why: str) -> None:
        cancel_batches(self.hook, batch_ids, why, self.log)

    def _check_outcome(self, key: str, counts: MergeCounts, results: str) -> None:
        # The job as one completed batch, for the one outcome rule; its failed lines are in the results.
        as_batch = Batch.model_validate(
            {
                "id": f"job-{key}",
                "endpoint": self.endpoint,
                "input_file_id": "-",
                "completion_window": "24h",
                "status": BatchStatus.COMPLETED,
                "created_at": 0,
                "error_file_id": results,
                "request_counts": {
                    "total": counts.requests,
                    "completed": counts.succeeded,
                    "failed": counts.not_succeeded,
                },
            }
        )
        try:
            check_batch_outcome(as_batch, self.max_failed_ratio)
        except MKA1BatchPartialFailureError:
            raise MKA1BatchPartialFailureError(
                f"Job failed: {counts.not_succeeded} of {counts.requests} requests have no answer "
                f"(failed {dict(counts.failed)}, invalid_output {counts.invalid_output}, never_ran "
                f"{counts.never_ran}), over max_failed_ratio={self.max_failed_ratio:g}. The results and "
                f"the manifest are written: {results}."
            ) from None
