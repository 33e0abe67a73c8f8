"""
What an MKA1 trigger's event says and how a resumed task reads it: the event statuses and
:func:`batch_from_event`. It imports none of Airflow's trigger machinery, so that the operators and the
sensor can import it when a DAG file is parsed; the triggers themselves are imported only to defer.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_batches.exceptions import MKA1Error, error_from_event
from airflow_provider_batches.models import Batch

EVENT_SUCCESS = "success"
EVENT_TERMINAL = "terminal"
EVENT_ERROR = "error"
EVENT_TIMEOUT = "timeout"


def batch_from_event(event: dict[str, Any] | None) -> Batch:
    """
    Return the final batch of a ``success`` or ``terminal`` trigger event.

    :raises MKA1Error: for an ``error`` event, the error the trigger met (same class, status code and
        request id); for a missing event or one without a batch, a plain one. ``timeout`` events are the
        caller's to handle before calling this.
    """
    if not isinstance(event, dict):
        raise MKA1Error(f"The task resumed without an event from its trigger (got {event!r}).")
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
