"""
:class:`MKA1BatchAdapter`: the MKA1 batch engine for ``apache-airflow-providers-common-ai``'s
``LLMBatchOperator`` and ``@task.llm_batch`` (``model_id="mka1:<model>"``), every call through
:class:`~airflow_provider_batches.hooks.mka1.MKA1Hook`. Only common-ai loads it, through the entry point
group ``airflow.providers.common.ai.batch_adapters``; nothing else in the package imports it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.ai.batch.base import (
    BatchAdapter,
    BatchState,
    BatchStatus,
    ExtractedOutput,
    RawResultItem,
    SubmitResult,
)
from airflow.providers.common.ai.exceptions import LLMBatchLimitExceededError, LLMBatchModelMismatchError

from airflow_provider_batches.constants import CONNECTION_TYPE
from airflow_provider_batches.hooks.mka1 import MKA1Hook

if TYPE_CHECKING:
    from airflow.providers.common.ai.batch.base import BatchRequest
    from airflow.providers.common.ai.batch.output_schema import OutputSpec

    from airflow_provider_batches.models import Batch, ResultLine

ENDPOINT = "/v1/chat/completions"

# common-ai's intent record carries microseconds, a batch's created_at whole seconds: as its OpenAI
# adapter does, look a little before not_before (the key and fingerprint are what identify the batch).
_CLOCK_SLACK_SECONDS = 300

_STATUS_MAP: dict[str, BatchStatus] = {
    "completed": "completed",
    "failed": "failed",
    "expired": "expired",
    "cancelled": "cancelled",
}

# Error-file codes of requests the gateway never ran (the batch expired or was cancelled first).
_UNRUN_CODES = {"batch_expired": "expired", "batch_cancelled": "cancelled"}


def hook_for(base_url: str | None, api_key: str | None) -> MKA1Hook:
    """
    The hook for what common-ai hands an adapter: a connection's host and password, nothing else. A path
    in the host (``https://apigw.mka1.com/api/v1/llm``, as an OpenAI-style connection holds it) becomes
    the API's base path.

    :param base_url: the connection's host.
    :param api_key: the connection's password.
    """
    host, base_path = base_url, None
    if base_url and "://" in base_url:
        parts = urlsplit(base_url)
        if parts.path not in ("", "/"):
            host, base_path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    return MKA1Hook.from_credentials(host, api_key or "", base_path=base_path, label="common-ai connection")


class MKA1BatchAdapter(BatchAdapter):
    """
    Batch adapter for the MKA1 gateway's Batch API (``/v1/chat/completions``), on :class:`MKA1Hook`:
    its retry rule, its id checks, and its ``POST /batches`` that looks for the batch a lost answer
    created before sending again (the idempotency key is common-ai's task-instance key with the input's
    fingerprint, so a ``clear`` with new prompts submits a new batch).

    .. note::

        common-ai passes an adapter only the connection's ``host`` and ``password``; the ``mka1``
        connection's extras (``on_behalf_of``, ``timeout``, ``max_retries``, ``verify``, ...) do not
        reach it and their defaults apply. ``base_path`` can ride in the host's path.

    :param api_key: the API key (the connection's password).
    :param base_url: the base URL (the connection's host); ``None``: the MKA1 gateway.
    :param client: an :class:`MKA1Hook` to use instead of building one.
    """

    name = "mka1"
    conn_types = frozenset({CONNECTION_TYPE, "pydanticai"})
    # MKA1 publishes no limits; these are the OpenAI-compatible Batch API's, so that a batch that big
    # fails before any upload rather than on the gateway.
    max_requests = 50_000
    max_payload_bytes = 200_000_000
    allows_per_request_model = False

    def __init__(
        self, *, api_key: str | None = None, base_url: str | None = None, client: Any | None = None
    ) -> None:
        self._client: MKA1Hook = client if client is not None else hook_for(base_url, api_key)

    @property
    def hook(self) -> MKA1Hook:
        """
        The :class:`MKA1Hook` every call of this adapter goes through: the ``client`` given, or the one built
        from the credentials.
        """
        return self._client

    # -- requests ------------------------------------------------------------------------------------

    def build_output_directive(self, spec: OutputSpec) -> dict[str, Any]:
        """
        The body fields that ask for ``spec``'s output: for a structured spec, a ``response_format`` of type
        ``json_schema`` (not strict) carrying its schema; ``{}`` otherwise. Merged into every request's body.

        :param spec: common-ai's output spec.
        """
        if not spec.is_structured:
            return {}
        schema = {"name": spec.schema_name, "schema": spec.json_schema, "strict": False}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}

    def _lines(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        idempotency_key: str,
        directive: dict[str, Any],
        system_prompt: str = "",
        max_tokens: int = 1024,
        request_params: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        for index, request in enumerate(requests):
            messages = []
            system = request.get("system_prompt") or system_prompt
            if system:
                messages.append({"role": "system", "content": system})
            messages.append({"role": "user", "content": request["prompt"]})
            # The user's params first: the keys the adapter manages cannot be overridden.
            body = {
                **(request_params or {}),
                **(request.get("params") or {}),
                "model": self.resolve_request_model(
                    request.get("model"), default_bare_model=model, request_index=index
                ),
                "messages": messages,
                "max_tokens": request.get("max_tokens") or max_tokens,
                **directive,
            }
            yield {"custom_id": f"{idempotency_key}-{index}", "method": "POST", "url": ENDPOINT, "body": body}

    def validate_requests(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        output_spec: OutputSpec,
        idempotency_key: str,
        system_prompt: str = "",
        max_tokens: int = 1024,
        request_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Refuse, before anything is written or sent, a batch this adapter would not submit: a ``custom_id``
        that would be too long, more than ``max_requests`` requests, requests for more than one model, or
        request lines (as :meth:`submit` writes them) over ``max_payload_bytes`` in all. Arguments as for
        :meth:`submit`.

        :raises LLMBatchLimitExceededError: too many requests or bytes, or a ``custom_id`` too long; the
            message says to split the input with ``.expand()``.
        :raises LLMBatchModelMismatchError: the requests name more than one model, or another provider's.
        """
        self.check_custom_id_length(idempotency_key, len(requests))
        if len(requests) > self.max_requests:
            raise LLMBatchLimitExceededError(
                f"An MKA1 batch here takes at most {self.max_requests} requests; got {len(requests)}. "
                "Split the input across mapped task instances with .expand()."
            )
        models = {
            self.resolve_request_model(r.get("model"), default_bare_model=model, request_index=i)
            for i, r in enumerate(requests)
        }
        if len(models) > 1:
            raise LLMBatchModelMismatchError(
                f"Every request of an MKA1 batch must use the same model; got {sorted(models)!r}."
            )
        lines = self._lines(
            requests,
            model=model,
            idempotency_key=idempotency_key,
            directive=self.build_output_directive(output_spec),
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            request_params=request_params,
        )
        size = 0
        for index, line in enumerate(lines):
            size += len(json.dumps(line).encode()) + 1
            if size > self.max_payload_bytes:
                raise LLMBatchLimitExceededError(
                    f"An MKA1 batch here takes at most {self.max_payload_bytes} bytes; this input reached "
                    f"{size} bytes at request {index + 1} of {len(requests)}. Split it with .expand()."
                )

    # -- the batch -----------------------------------------------------------------------------------

    @staticmethod
    def reattach_key(idempotency_key: str, input_fingerprint: str) -> str:
        """The hook's idempotency key: this task instance (common-ai's key) and this input (fingerprint)."""
        return f"{idempotency_key}-{input_fingerprint[:16]}"

    def submit(
        self,
        requests: list[BatchRequest],
        *,
        model: str,
        idempotency_key: str,
        input_fingerprint: str,
        output_spec: OutputSpec,
        system_prompt: str = "",
        max_tokens: int = 1024,
        request_params: dict[str, Any] | None = None,
        completion_window: str = "24h",
        **kwargs: Any,
    ) -> SubmitResult:
        """
        Write the request lines to a temporary JSONL file (removed afterwards, whatever happens) and hand it
        to :meth:`~airflow_provider_batches.hooks.mka1.MKA1Hook.submit_batch`, which uploads it and creates
        the batch, or returns the still usable batch an earlier try created with the same
        :meth:`reattach_key`, uploading nothing.
        Each request's ``custom_id`` is ``<idempotency_key>-<index>``.

        :param requests: common-ai's requests (``prompt``; optionally ``system_prompt``, ``model``,
            ``max_tokens``, ``params``).
        :param model: the model of every request, without the ``mka1:`` prefix.
        :param idempotency_key: common-ai's key of the task instance, recorded in the batch's metadata.
        :param input_fingerprint: common-ai's fingerprint of the input, recorded in the batch's metadata.
        :param output_spec: the output wanted (see :meth:`build_output_directive`).
        :param system_prompt: the system message of the requests that give none.
        :param max_tokens: the ``max_tokens`` of the requests that give none.
        :param request_params: body fields of every request; a request's own ``params`` override them, and
            ``model``, ``messages``, ``max_tokens`` and the output directive override both.
        :param completion_window: the batch's completion window (the API accepts only ``24h``).
        :return: the batch's id and its input file's id.
        """
        lines = self._lines(
            requests,
            model=model,
            idempotency_key=idempotency_key,
            directive=self.build_output_directive(output_spec),
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            request_params=request_params,
        )
        # Line by line to a temporary file, which the hook streams up: the requests are never held
        # whole as bytes.
        fd, path = tempfile.mkstemp(prefix=f"mka1-{idempotency_key}-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for line in lines:
                    out.write(json.dumps(line) + "\n")
            batch = self.hook.submit_batch(
                ENDPOINT,
                input_path=path,
                completion_window=completion_window,
                metadata={"idempotency_key": idempotency_key, "input_fingerprint": input_fingerprint[:16]},
                idempotency_key=self.reattach_key(idempotency_key, input_fingerprint),
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return SubmitResult(batch_id=batch.id, provider_input_ref=batch.input_file_id)

    def get_batch(self, batch_id: str) -> BatchState:
        """
        The batch's state for common-ai: its status (any status not terminal is ``in_progress``), its counts
        (the requests an expired or cancelled batch never ran count as ``expired`` or ``cancelled``) and its
        ``errors`` joined into one message.

        :param batch_id: the batch's id.
        """
        batch = self.hook.get_batch(batch_id)
        counts = batch.request_counts
        # Progress counters, not a split: what an expired or cancelled batch never ran is the rest.
        rest = max(counts.total - counts.completed - counts.failed, 0)
        errors = "; ".join(
            f"{error.code or 'error'}: {error.message or ''}".rstrip(": ")
            for error in (batch.errors.data if batch.errors else [])
        )
        return BatchState(
            status=_STATUS_MAP.get(str(batch.status), "in_progress"),
            counts={
                "succeeded": counts.completed,
                "errored": counts.failed,
                "expired": rest if batch.status == "expired" else 0,
                "cancelled": rest if batch.status == "cancelled" else 0,
            },
            error_message=errors or None,
        )

    def cancel_batch(self, batch_id: str) -> None:
        """
        Ask the gateway to cancel the batch
        (:meth:`~airflow_provider_batches.hooks.mka1.MKA1Hook.cancel_batch`: a batch already cancelling or
        cancelled is no error).

        :param batch_id: the batch's id.
        """
        self.hook.cancel_batch(batch_id)

    def find_orphaned_batch(
        self, idempotency_key: str, input_fingerprint: str, not_before: str
    ) -> str | None:
        """The newest batch carrying this key and fingerprint created since ``not_before``, or ``None``."""
        batch = self.hook.find_batch(self.reattach_key(idempotency_key, input_fingerprint), endpoint=ENDPOINT)
        if batch is None:
            return None
        if not_before:
            since = math.floor(datetime.fromisoformat(not_before).timestamp()) - _CLOCK_SLACK_SECONDS
            if batch.created_at < since:
                return None
        return batch.id

    # -- results -------------------------------------------------------------------------------------

    def iter_results(self, batch_id: str) -> Iterator[RawResultItem]:
        """
        The batch's results as common-ai's items, streamed: the output file's lines, then the error file's.
        The batch is read at once, so a bad ``batch_id`` raises here, not at the first item. A line whose
        ``custom_id`` is not ``<key>-<index>`` is skipped (common-ai counts its request as missing); an error
        line for a request the batch never ran (``batch_expired``, ``batch_cancelled``) is ``expired`` or
        ``cancelled``, any other ``errored``.

        :param batch_id: the batch's id.
        """
        return self._results(self.hook.get_batch(batch_id))

    def _results(self, batch: Batch) -> Iterator[RawResultItem]:
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for line in self.hook.iter_results(file_id):
                    item = _raw_item(line)
                    if item is not None:
                        yield item

    def extract_output(self, raw: RawResultItem, spec: OutputSpec) -> ExtractedOutput:
        """
        The answer's assistant message: JSON text for a structured ``spec``, plain text otherwise; ``absent``
        for an item without one (an error line, or an answer with no content).

        :param raw: one item of :meth:`iter_results`.
        :param spec: the output wanted.
        """
        if raw.raw is None:
            return ExtractedOutput(kind="absent")
        return ExtractedOutput(kind="json_text" if spec.is_structured else "text", text=raw.raw)


def _raw_item(line: ResultLine) -> RawResultItem | None:
    """One result line as common-ai's item; ``None`` for a line whose ``custom_id`` is not ours."""
    prefix, _, index = line.custom_id.rpartition("-")
    if not prefix or not index.isdigit():
        return None  # common-ai counts the request as missing
    raw_body = line.response.body if line.response is not None else None
    body: dict[str, Any] = raw_body if isinstance(raw_body, dict) else {}
    if not line.ok:
        found = body.get("error")
        body_error: dict[str, Any] = found if isinstance(found, dict) else {}
        code = (line.error.code if line.error else None) or body_error.get("code")
        message = (line.error.message if line.error else None) or body_error.get("message")
        status = _UNRUN_CODES.get(str(code), "errored")
        http_status = line.response.status_code if line.response is not None else None
        if code is None and http_status:
            code = http_status
        return RawResultItem(
            custom_id=line.custom_id,
            index=int(index),
            provider_status=status,  # type: ignore[arg-type]
            model=body.get("model"),
            usage=None,
            finish_reason=None,
            error={
                "type": "provider_error" if status == "errored" else status,
                "message": message or f"HTTP {http_status}",
                "provider_code": None if code is None else str(code),
                "stage": "provider",
            },
            raw=None,
        )
    choice = (body.get("choices") or [{}])[0]
    usage = body.get("usage") or {}
    return RawResultItem(
        custom_id=line.custom_id,
        index=int(index),
        provider_status="success",
        model=body.get("model"),
        usage={
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
        finish_reason=choice.get("finish_reason"),
        error=None,
        raw=(choice.get("message") or {}).get("content"),
    )
