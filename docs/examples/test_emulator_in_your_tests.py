"""
Testing your own MKA1 code against the emulator, with pytest: the fixtures, a flaky
gateway, a sensor through an outage, and a line that fails once then is answered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airflow_provider_batches.emulator import run_emulator
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import Batch
from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

CREATE = "/api/v1/llm/batches"
GET_BATCH = "/api/v1/llm/batches/*"


# --8<-- [start:fixtures]
@pytest.fixture(scope="session")
def mka1():
    """
    One emulator for the test session, fast enough that a batch of a few lines ends in
    under a second.
    """
    with run_emulator(
        api_keys=("test-key",),
        validation_seconds=0.2,
        lines_per_second=200,
        finalizing_seconds=0.2,
    ) as emu:
        yield emu


@pytest.fixture
def mka1_conn(mka1, monkeypatch):
    """
    `mka1_default` pointing at the emulator; no fault or count left over from another
    test.
    """
    mka1.clear_faults()
    mka1.reset_calls()
    connection = {
        "conn_type": "mka1",
        "host": mka1.base_url,
        "password": "test-key",
        # Two quick retries instead of five with backoff: a fault test then takes a
        # fraction of a second.
        "extra": {"max_retries": 2, "backoff_base": 0.05},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", json.dumps(connection))
    return "mka1_default"


# --8<-- [end:fixtures]


def write_requests(directory: Path, bodies: list[dict]) -> Path:
    path = directory / "requests.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for n, body in enumerate(bodies):
            line = {
                "custom_id": f"q-{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            f.write(json.dumps(line) + "\n")
    return path


def chat(text: str, **extra: object) -> dict:
    return {
        "model": "mka1-chat",
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def wait_until_finished(hook: MKA1Hook, batch_id: str, timeout: float = 30) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = hook.get_batch(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.1)


# --8<-- [start:flaky]
def test_a_flaky_gateway_bills_one_batch(mka1, mka1_conn, tmp_path):
    # The create is carried out, then the connection is closed before the answer: a
    # blind retry would
    # create a second batch. The next two reads of the batch answer 503: the hook's
    # retries absorb them.
    mka1.add_fault(method="POST", path=CREATE, kind="drop", count=1)
    mka1.add_fault(method="GET", path=GET_BATCH, kind="status", status=503, count=2)

    hook = MKA1Hook(mka1_conn_id=mka1_conn)
    batch = hook.submit_batch(
        "/v1/chat/completions",
        input_path=write_requests(tmp_path, [chat("one"), chat("two")]),
        # what the operator derives from the task instance
        idempotency_key="test-flaky-gateway",
    )
    batch = wait_until_finished(hook, batch.id)

    assert batch.status == "completed"
    assert mka1.calls("POST", CREATE) == 1  # no duplicate batch
    assert mka1.calls("GET", GET_BATCH, status=503) == 2  # both faults were served
    assert mka1.faults() == []


# --8<-- [end:flaky]


# --8<-- [start:sensor]
def test_a_poke_during_an_outage_is_not_done_yet(mka1, mka1_conn, tmp_path):
    hook = MKA1Hook(mka1_conn_id=mka1_conn)
    batch = hook.submit_batch(
        "/v1/chat/completions", input_path=write_requests(tmp_path, [chat("hi")])
    )
    sensor = MKA1BatchSensor(
        task_id="wait_for_batch", batch_id=batch.id, mka1_conn_id=mka1_conn
    )

    # Three 503s in a row spend the connection's two retries: the poke says "not yet"
    # instead of failing.
    mka1.add_fault(method="GET", path=GET_BATCH, kind="status", status=503, count=3)
    assert sensor.poke({}) is False

    wait_until_finished(hook, batch.id)
    done = sensor.poke({})  # the gateway is back and the batch has completed
    assert done.is_done
    assert done.xcom_value["status"] == "completed"
    assert done.xcom_value["output_file_id"]


# --8<-- [end:sensor]


# --8<-- [start:fail]
def test_a_line_that_fails_once_is_answered_when_resubmitted(mka1, mka1_conn, tmp_path):
    hook = MKA1Hook(mka1_conn_id=mka1_conn)
    busy = {"code": "server_error", "message": "busy", "times": 1}
    requests_file = write_requests(
        tmp_path, [chat("fine"), chat("unlucky", emulator_fail=busy)]
    )

    first = wait_until_finished(
        hook, hook.submit_batch("/v1/chat/completions", input_path=requests_file).id
    )
    assert first.status == "completed"  # a failed line does not fail the batch
    assert (first.request_counts.completed, first.request_counts.failed) == (1, 1)
    [error] = hook.iter_results(first.error_file_id)
    assert (error.custom_id, error.error.code, error.response.status_code) == (
        "q-1",
        "server_error",
        500,
    )

    again = wait_until_finished(
        hook, hook.submit_batch("/v1/chat/completions", input_path=requests_file).id
    )
    assert (again.request_counts.completed, again.request_counts.failed) == (2, 0)
    assert {
        line.custom_id for line in hook.iter_results(again.output_file_id) if line.ok
    } == {"q-0", "q-1"}


# --8<-- [end:fail]
