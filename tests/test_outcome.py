"""The one outcome rule, on batches that really reached each status on the emulator."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_batches.emulator import run_emulator
from airflow_provider_batches.exceptions import (
    MKA1BatchCancelledError,
    MKA1BatchExpiredError,
    MKA1BatchFailedError,
    MKA1BatchOutcomeError,
    MKA1BatchPartialFailureError,
    MKA1NotFoundError,
)
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import BatchStatus
from airflow_provider_batches.outcome import check_batch_outcome
from tests.conftest import API_KEY, connection_json, make_batch, submit_batch, wait_for


@pytest.fixture(scope="module")
def expiring_emulator() -> Iterator[object]:
    """A batch's 24 h window scaled down to one second, with lines slow enough to outlast it."""
    with run_emulator(
        api_keys=(API_KEY,),
        validation_seconds=0.1,
        lines_per_second=20,
        finalizing_seconds=0.1,
        completion_window_seconds=1.0,
    ) as emu:
        yield emu


def test_completed_succeeds(mka1_conn, tmp_path) -> None:
    batch = wait_for(submit_batch(tmp_path, 5).id)
    assert batch.status == BatchStatus.COMPLETED
    assert check_batch_outcome(batch) is True


def test_completed_with_failed_lines_is_judged_by_max_failed_ratio(mka1_conn, tmp_path) -> None:
    batch = wait_for(submit_batch(tmp_path, 10, fail=[2, 7]).id)
    assert batch.request_counts.failed == 2 and batch.error_file_id

    with pytest.raises(MKA1BatchPartialFailureError) as info:
        check_batch_outcome(batch)
    message = str(info.value)
    assert "2 of 10 requests failed (20.00%)" in message and batch.error_file_id in message
    assert info.value.batch == batch
    with pytest.raises(MKA1BatchPartialFailureError):
        check_batch_outcome(batch, max_failed_ratio=0.19)
    assert check_batch_outcome(batch, max_failed_ratio=0.2) is True
    assert check_batch_outcome(batch, max_failed_ratio=1.0) is True


def test_failed_raises_with_the_batch_errors(mka1_conn, tmp_path) -> None:
    batch = wait_for(submit_batch(tmp_path, 4, invalid=[1, 3]).id)
    assert batch.status == BatchStatus.FAILED

    with pytest.raises(MKA1BatchFailedError) as info:
        check_batch_outcome(batch, max_failed_ratio=1.0)
    message = str(info.value)
    assert "[invalid_json_line]" in message and "(line 2)" in message and "(line 4)" in message


def test_cancelled_says_whether_partial_output_exists(emulator, mka1_conn, tmp_path) -> None:
    hook = MKA1Hook()
    early = submit_batch(tmp_path, 2000)  # cancelled while validating: nothing done
    hook.cancel_batch(early.id)
    running = submit_batch(tmp_path, 2000)  # cancelled once some lines are done
    while hook.get_batch(running.id).request_counts.completed < 20:
        time.sleep(0.05)
    hook.cancel_batch(running.id)

    with pytest.raises(MKA1BatchCancelledError, match="no partial output"):
        check_batch_outcome(wait_for(early.id))
    cancelled = wait_for(running.id)
    assert cancelled.status == BatchStatus.CANCELLED and cancelled.output_file_id
    partial = f"partial output is in file {cancelled.output_file_id}"
    with pytest.raises(MKA1BatchCancelledError, match=partial):
        check_batch_outcome(cancelled, max_failed_ratio=1.0)


def test_expired_says_whether_partial_output_exists(expiring_emulator, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_EXPIRING", connection_json(expiring_emulator.base_url))
    batch = submit_batch(tmp_path, 100, conn_id="mka1_expiring")  # 5 s of work in a 1 s window

    expired = wait_for(batch.id, conn_id="mka1_expiring")

    assert expired.status == BatchStatus.EXPIRED
    assert 0 < expired.request_counts.completed < 100 and expired.output_file_id
    with pytest.raises(MKA1BatchExpiredError, match=f"partial output is in file {expired.output_file_id}"):
        check_batch_outcome(expired, max_failed_ratio=1.0)


@pytest.mark.parametrize("status", ["validating", "in_progress", "finalizing", "cancelling", "paused_by_ops"])
def test_anything_else_is_not_terminal(status: str) -> None:
    assert check_batch_outcome(make_batch(status), max_failed_ratio=0.0) is False


def test_outcome_errors_are_final_and_api_errors_are_not() -> None:
    for error in (
        MKA1BatchFailedError,
        MKA1BatchExpiredError,
        MKA1BatchCancelledError,
        MKA1BatchPartialFailureError,
    ):
        assert issubclass(error, MKA1BatchOutcomeError) and issubclass(error, AirflowFailException)
    assert not issubclass(MKA1NotFoundError, AirflowFailException)


@pytest.mark.parametrize("ratio", [-0.1, 1.01, float("nan")])
def test_max_failed_ratio_is_checked(ratio: float) -> None:
    with pytest.raises(ValueError, match="max_failed_ratio"):
        check_batch_outcome(make_batch("completed"), max_failed_ratio=ratio)
