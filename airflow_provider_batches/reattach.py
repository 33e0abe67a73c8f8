"""
Creating a batch at most once: the idempotency key of a task instance, finding the batch that carries
it, the one reattach rule (:func:`may_reattach`), and the ``POST /batches`` that looks for the batch
before it is sent again. Only :class:`~airflow_provider_batches.hooks.mka1.MKA1Hook` calls it; it never
uploads a file or waits on a batch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.constants import (
    IDEMPOTENCY_METADATA_KEY,
    INPUT_FINGERPRINT_METADATA_KEY,
    REATTACH_MAX_AGE,
    REATTACH_MAX_PAGES,
)
from airflow_provider_batches.exceptions import MKA1InvalidInputError
from airflow_provider_batches.models import NO_REATTACH_STATUSES, Batch, BatchPage
from airflow_provider_batches.responses import parse_model
from airflow_provider_batches.retry import Attempt
from airflow_provider_batches.validation import api_path, validate_header_value

if TYPE_CHECKING:
    from airflow_provider_batches.transport.sync import SyncTransport


def may_reattach(batch: Batch, input_fingerprint: str | None = None) -> bool:
    """
    The reattach rule: a batch found by its idempotency key is reused unless it ended unsuccessfully
    (failed, expired, cancelling or cancelled) or was made from another input
    (:func:`input_changed`), in which case a new batch is created.

    :param batch: a batch carrying the idempotency key.
    :param input_fingerprint: what the new batch would be made from, if known.
    """
    return batch.status not in NO_REATTACH_STATUSES and not input_changed(batch, input_fingerprint)


def input_changed(batch: Batch, input_fingerprint: str | None) -> bool:
    """
    Whether ``batch`` was made from another input than ``input_fingerprint`` (its recorded
    fingerprint differs; a batch recorded none, made by an older provider, differs only by its file id).
    """
    if input_fingerprint is None:
        return False
    recorded = (batch.metadata or {}).get(INPUT_FINGERPRINT_METADATA_KEY)
    if recorded is not None:
        return bool(recorded != input_fingerprint)
    return input_fingerprint.startswith("file:") and input_fingerprint != f"file:{batch.input_file_id}"


def idempotency_key_for(context: Mapping[str, Any]) -> str:
    """
    The idempotency key of a task instance: the same for every try of one (dag, run, task, map index),
    different for any other. Pass it to :meth:`MKA1Hook.create_batch` so that a task retry reattaches to
    the batch an earlier try created.

    :param context: the task's Airflow context.
    :return: ``af-`` and 32 hex digits of a SHA-256.
    """
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        raise MKA1InvalidInputError("idempotency_key_for needs a task context with 'ti'.")
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    map_index = getattr(ti, "map_index", -1)
    identity = [ti.dag_id, run_id, ti.task_id, -1 if map_index is None else map_index]
    return "af-" + hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


def carries_key(batch: Batch, key: str, *, input_file_id: str | None, endpoint: str | None) -> bool:
    """
    Whether ``batch`` was created with idempotency key ``key`` (and, if given, from ``input_file_id``
    for ``endpoint``).
    """
    return (
        (batch.metadata or {}).get(IDEMPOTENCY_METADATA_KEY) == key
        and input_file_id in (None, batch.input_file_id)
        and endpoint in (None, batch.endpoint)
    )


def find(
    transport: SyncTransport, idempotency_key: str, *, input_file_id: str | None, endpoint: str | None
) -> Batch | None:
    """The newest batch of the last 25 hours (at most 1,000 read) that :func:`carries_key`, or ``None``."""
    key = validate_header_value(idempotency_key, "idempotency_key")
    cutoff = time.time() - REATTACH_MAX_AGE
    pages = transport.pages(api_path("batches"), BatchPage, {"limit": 100})
    for _, page in zip(range(REATTACH_MAX_PAGES), pages, strict=False):
        for batch in page.data:
            if carries_key(batch, key, input_file_id=input_file_id, endpoint=endpoint):
                return batch
        if page.data and page.data[-1].created_at < cutoff:
            break
    return None


def find_reusable(
    transport: SyncTransport,
    idempotency_key: str,
    *,
    input_file_id: str | None,
    endpoint: str | None,
    input_fingerprint: str | None = None,
    on_input_change: Callable[[Batch], None] | None = None,
) -> Batch | None:
    """
    The batch :func:`find` finds if :func:`may_reattach` allows reusing it, else ``None`` (logged). One
    made from another input is handed to ``on_input_change`` first (which cancels it, or raises).
    """
    found = find(transport, idempotency_key, input_file_id=input_file_id, endpoint=endpoint)
    if found is None:
        return None
    if input_changed(found, input_fingerprint):
        transport.log.warning(
            "Batch %s has idempotency key %s but was made from another input: not reattached.",
            found.id,
            idempotency_key,
        )
        if on_input_change is not None:
            on_input_change(found)
        return None
    if not may_reattach(found):
        transport.log.info(
            "Batch %s has idempotency key %s but is %s: creating a new batch.",
            found.id,
            idempotency_key,
            found.status,
        )
        return None
    transport.log.info(
        "Reattached to batch %s (%s), created earlier with idempotency key %s.",
        found.id,
        found.status,
        idempotency_key,
    )
    return found


def create(
    transport: SyncTransport, input_file_id: str, options: dict[str, Any], idempotency_key: str | None
) -> Batch:
    """
    ``POST /batches``, in the transport's one retry loop: after each failed try that may have created the
    batch, look for it by its key before the loop sends again; without a key, raise instead.

    :param transport: the sync transport.
    :param input_file_id: the checked id of the input file.
    :param options: the checked rest of the body (from ``batch_options``).
    :param idempotency_key: the key in ``options``' metadata, or ``None``.
    """
    path = api_path("batches")
    log = transport.log

    def created_anyway(attempt: Attempt) -> Batch | None:
        if not attempt.may_have_taken_effect:
            return None
        if idempotency_key is None:
            log.error(
                "POST /batches failed in a way that may have created the batch anyway; not retried "
                "because no idempotency key was given."
            )
            raise attempt.error  # type: ignore[misc]
        log.warning("%s; looking for the batch it may have created.", attempt.error)
        found = find(transport, idempotency_key, input_file_id=input_file_id, endpoint=options["endpoint"])
        if found is not None and may_reattach(found):
            log.info("The failed request had created batch %s: reattached.", found.id)
            return found
        return None

    body = {"input_file_id": input_file_id, **options}
    result = transport.send("POST", path, json_body=body, recover=created_anyway)
    if isinstance(result, Batch):
        return result
    batch = parse_model(Batch, result.content, result.status_code, result.headers, method="POST", path=path)
    log.info("Created batch %s (%s) for input file %s.", batch.id, batch.status, input_file_id)
    return batch
