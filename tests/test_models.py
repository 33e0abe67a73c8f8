"""The API models (liberal in what they accept) and the error tree."""

from __future__ import annotations

import json
import logging
import pickle

import pytest

from airflow_provider_batches import models
from airflow_provider_batches.exceptions import (
    MKA1APIError,
    MKA1AuthenticationError,
    MKA1BatchExpiredError,
    MKA1BatchOutcomeError,
    MKA1ConnectionError,
    MKA1Error,
    MKA1InvalidInputError,
    MKA1InvalidResponseError,
    MKA1NotFoundError,
    MKA1RateLimitError,
    MKA1ServerError,
    error_from_event,
    error_to_event,
    is_transient,
)
from airflow_provider_batches.models import (
    SUCCESS_STATUSES,
    TERMINAL_STATUSES,
    Batch,
    BatchPage,
    BatchStatus,
    FileDeleted,
    FileObject,
    ResultLine,
)

MINIMAL = {
    "id": "batch_1",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "input_file_id": "file-1",
    "completion_window": "24h",
    "status": "validating",
    "created_at": 1_700_000_000,
    "request_counts": {"total": 0, "completed": 0, "failed": 0},
}


def test_status_sets() -> None:
    assert {s.value for s in TERMINAL_STATUSES} == {"completed", "failed", "expired", "cancelled"}
    assert {BatchStatus.COMPLETED} == SUCCESS_STATUSES
    assert str(BatchStatus.IN_PROGRESS) == "in_progress"


@pytest.mark.parametrize("status", [s.value for s in BatchStatus])
def test_known_statuses_become_the_enum(status: str) -> None:
    batch = Batch.model_validate({**MINIMAL, "status": status})
    assert isinstance(batch.status, BatchStatus)
    assert batch.is_terminal == (status in {"completed", "failed", "expired", "cancelled"})
    assert batch.is_success == (status == "completed")


def test_unknown_status_is_kept_not_terminal_and_logged_once(caplog) -> None:
    models._unknown_statuses_logged.discard("paused_for_review")
    with caplog.at_level(logging.WARNING, logger="airflow_provider_batches.models"):
        first = Batch.model_validate({**MINIMAL, "status": "paused_for_review"})
        Batch.model_validate({**MINIMAL, "status": "paused_for_review"})
    assert first.status == "paused_for_review" and not isinstance(first.status, BatchStatus)
    assert not first.is_terminal and not first.is_success
    assert [r.getMessage() for r in caplog.records].count(
        "The MKA1 API sent a batch status this provider does not know: 'paused_for_review' (not terminal)."
    ) == 1
    assert Batch.model_validate(first.model_dump(mode="json")).status == "paused_for_review"


def test_batch_is_liberal() -> None:
    batch = Batch.model_validate(
        {
            **MINIMAL,
            "request_counts": None,
            "errors": [{"code": "invalid_line", "message": "bad", "line": 3}],
            "metadata": None,
            "output_file_id": None,
            "brand_new_field": {"x": 1},
        }
    )
    assert batch.request_counts.total == 0
    assert batch.errors is not None and batch.errors.data[0].line == 3
    assert batch.max_concurrency is None
    assert batch.model_extra == {"brand_new_field": {"x": 1}}
    newer = Batch.model_validate({**MINIMAL, "max_concurrency": 8, "metadata": {"k": "v"}})
    assert newer.max_concurrency == 8 and newer.metadata == {"k": "v"}
    full = Batch.model_validate(
        {**MINIMAL, "errors": {"object": "list", "data": [{"code": "c", "message": "m", "param": None}]}}
    )
    assert full.errors is not None and full.errors.data[0].code == "c"


def test_batch_requires_its_identity() -> None:
    with pytest.raises(ValueError):
        Batch.model_validate({k: v for k, v in MINIMAL.items() if k != "id"})


def test_negative_request_counts_are_not_a_batch() -> None:
    # "-1 of 3 failed" would read as a success to the outcome rule.
    with pytest.raises(ValueError, match="failed"):
        Batch.model_validate({**MINIMAL, "request_counts": {"total": 3, "completed": 3, "failed": -1}})


def test_files_pages_and_result_lines() -> None:
    file = FileObject.model_validate(
        {
            "id": "file_a",
            "bytes": 10,
            "created_at": 1,
            "filename": "a.jsonl",
            "purpose": "batch",
            "status": None,
        }
    )
    assert file.object == "file" and file.expires_at is None
    assert FileDeleted.model_validate({"id": "file_a", "deleted": True}).deleted
    page = BatchPage.model_validate({"object": "list", "data": [MINIMAL], "has_more": None, "last_id": None})
    assert isinstance(page.data[0], Batch) and page.has_more is False
    ok = ResultLine.model_validate(
        {
            "custom_id": "r1",
            "response": {"status_code": 200, "request_id": "q", "body": {"a": 1}},
            "error": None,
        }
    )
    failed = ResultLine.model_validate(
        {"custom_id": "r2", "response": None, "error": {"code": "boom", "message": "no"}}
    )
    assert ok.ok and not failed.ok
    assert failed.error is not None and failed.error.code == "boom"


# -- exceptions -------------------------------------------------------------------------------------


def test_tree() -> None:
    from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

    assert issubclass(MKA1Error, AirflowException)
    assert issubclass(MKA1InvalidInputError, ValueError)
    assert issubclass(MKA1BatchOutcomeError, AirflowFailException)
    for cls in (MKA1AuthenticationError, MKA1NotFoundError, MKA1RateLimitError, MKA1ServerError):
        assert issubclass(cls, MKA1APIError)
    assert issubclass(MKA1InvalidResponseError, MKA1APIError)


def test_api_error_pickles_and_serializes() -> None:
    error = MKA1NotFoundError(404, "No batch found", method="GET", path="/batches/b", request_id="r#1")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is MKA1NotFoundError and str(again) == str(error)
    assert (again.status_code, again.message, again.request_id) == (404, "No batch found", "r#1")
    path, args, kwargs = error.serialize()
    assert path == "airflow_provider_batches.exceptions.MKA1NotFoundError"
    assert str(MKA1NotFoundError(*args, **kwargs)) == str(error)
    assert "request_id='r#1'" in repr(error)
    conn = MKA1ConnectionError("lost", method="GET", path="/x")
    assert pickle.loads(pickle.dumps(conn)).path == "/x"


@pytest.mark.parametrize(
    "error",
    [
        MKA1NotFoundError(404, "No batch found", method="GET", path="/batches/b", request_id="r#1"),
        MKA1ConnectionError("lost", method="GET", path="/x"),
        MKA1InvalidInputError("Invalid batch id"),
    ],
)
def test_errors_survive_a_trigger_event(error: MKA1Error) -> None:
    """A trigger event is JSON: the task still raises the same class with the same facts."""
    event_error = json.loads(json.dumps(error_to_event(error)))
    again = error_from_event(event_error, "fallback")
    assert type(again) is type(error) and str(again) == str(error)
    assert event_error["status_code"] == (error.status_code if isinstance(error, MKA1APIError) else None)


def test_an_unreadable_event_error_falls_back() -> None:
    again = error_from_event({"type": "MKA1NotFoundError", "args": []}, "fallback")
    assert type(again) is MKA1Error and str(again) == "fallback"


def test_outcome_error_carries_the_batch() -> None:
    batch = Batch.model_validate({**MINIMAL, "status": "expired"})
    error = MKA1BatchExpiredError("Batch batch_1 expired.", batch=batch)
    assert error.batch is batch
    again = pickle.loads(pickle.dumps(error))
    assert again.batch == batch and str(again) == "Batch batch_1 expired."
    _, args, kwargs = error.serialize()
    assert MKA1BatchExpiredError(*args, **kwargs).batch == batch


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (MKA1ConnectionError("x"), True),
        (MKA1ServerError(503, "x"), True),
        (MKA1ServerError(502, "x"), True),
        (MKA1ServerError(501, "x"), False),
        (MKA1RateLimitError(429, "x"), True),
        (MKA1APIError(408, "x"), True),
        (MKA1NotFoundError(404, "x"), False),
        (MKA1AuthenticationError(401, "x"), False),
        (MKA1InvalidResponseError(200, "x"), False),
        (MKA1InvalidInputError("x"), False),
        (MKA1Error("x"), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (KeyError("x"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
