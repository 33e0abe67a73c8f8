"""MKA1BatchOperator with an input that changed between tries: never reattached to, cancelled or refused."""

from __future__ import annotations

import pytest

from airflow_provider_batches.exceptions import MKA1InvalidInputError
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import BatchStatus
from airflow_provider_batches.operators.mka1 import MKA1BatchOperator
from tests.conftest import make_context, write_requests
from tests.jobs.conftest import emulator_session  # noqa: F401 (an emulator of this module's own)

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.3}


def operator(**kwargs) -> MKA1BatchOperator:
    return MKA1BatchOperator(task_id="batch", **{**FAST, **kwargs})


def test_a_retry_with_a_changed_input_file_does_not_reattach(emulator, mka1_conn, tmp_path) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 300)
    context = make_context()
    first = operator(input_path=str(path), wait_for_completion=False).execute(context)
    old = context["ti"].xcoms["batch_id"]
    same = make_context(run_id=context["run_id"])
    operator(input_path=str(path), wait_for_completion=False).execute(same)
    assert same["ti"].xcoms["batch_id"] == old  # unchanged input: reattached

    write_requests(path, 5)  # the file changed before the next try
    retry = make_context(run_id=context["run_id"])
    operator(input_path=str(path), wait_for_completion=False).execute(retry)

    new = retry["ti"].xcoms["batch_id"]
    assert new != old
    assert MKA1Hook().get_batch(old).status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert MKA1Hook().get_batch(new).request_counts.total in (0, 5)
    assert first is None


def test_a_changed_input_file_fails_with_on_input_change_fail(emulator, mka1_conn, tmp_path) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 300)
    context = make_context()
    operator(input_path=str(path), wait_for_completion=False).execute(context)
    write_requests(path, 5)
    emulator.reset_calls()

    with pytest.raises(MKA1InvalidInputError, match="input changed"):
        operator(input_path=str(path), wait_for_completion=False, on_input_change="fail").execute(
            make_context(run_id=context["run_id"])
        )
    assert emulator.calls(method="POST", path="*") == 0
