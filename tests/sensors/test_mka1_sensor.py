"""MKA1BatchSensor in poke, reschedule and deferrable mode, over HTTP against the emulator."""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowSkipException,
    PokeReturnValue,
    TaskDeferred,
)

from airflow_provider_batches.exceptions import (
    MKA1BatchCancelledError,
    MKA1BatchPartialFailureError,
    MKA1Error,
    MKA1NotFoundError,
)
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor
from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger
from tests.conftest import connection_json, make_context, run_trigger, submit_batch, wait_for

BATCHES = "/api/v1/llm/batches/*"


def sensor(**kwargs) -> MKA1BatchSensor:
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    return MKA1BatchSensor(task_id="wait", **kwargs)


def defer(task: MKA1BatchSensor) -> MKA1BatchTrigger:
    with pytest.raises(TaskDeferred) as info:
        task.execute(make_context("wait"))
    assert info.value.method_name == "execute_complete"
    trigger = info.value.trigger
    assert isinstance(trigger, MKA1BatchTrigger)
    return trigger


def resume(task: MKA1BatchSensor, trigger: MKA1BatchTrigger):
    """What the worker does once the triggerer has fired: execute_complete with the event's payload."""
    (event,) = asyncio.run(run_trigger(trigger))
    return task.execute_complete(make_context("wait"), event.payload)


def test_template_fields() -> None:
    assert set(MKA1BatchSensor.template_fields) == {"batch_id", "on_behalf_of"}


# -- poke -----------------------------------------------------------------------------------------


def test_poke_mode_returns_the_final_batch(mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 20)

    result = sensor(batch_id=batch.id).execute(make_context("wait"))

    assert result["id"] == batch.id
    assert result["status"] == "completed"
    assert result["output_file_id"] == MKA1Hook().get_batch(batch.id).output_file_id
    assert result["request_counts"] == {"total": 20, "completed": 20, "failed": 0}


def test_a_transient_error_during_a_poke_is_not_done_and_the_next_poke_tries_again(
    emulator, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_NO_RETRY", connection_json(emulator.base_url, max_retries=0))
    batch = wait_for(submit_batch(tmp_path, 2, conn_id="mka1_no_retry").id, conn_id="mka1_no_retry")
    task = sensor(batch_id=batch.id, mka1_conn_id="mka1_no_retry")
    emulator.add_fault(method="GET", path=BATCHES, kind="status", status=503, count=2)

    assert task.poke(make_context("wait")) is False
    assert task.poke(make_context("wait")) is False
    done = task.poke(make_context("wait"))

    assert isinstance(done, PokeReturnValue) and done.is_done
    assert done.xcom_value["status"] == "completed"


def test_a_permanent_error_during_a_poke_fails_the_sensor(mka1_conn) -> None:
    with pytest.raises(MKA1NotFoundError, match="404"):
        sensor(batch_id="batch_doesnotexist").execute(make_context("wait"))


def test_the_outcome_rule_decides_with_max_failed_ratio(mka1_conn, tmp_path) -> None:
    batch = wait_for(submit_batch(tmp_path, 10, fail=[4]).id)

    with pytest.raises(MKA1BatchPartialFailureError, match=batch.error_file_id):
        sensor(batch_id=batch.id).poke(make_context("wait"))
    done = sensor(batch_id=batch.id, max_failed_ratio=0.1).poke(make_context("wait"))
    assert isinstance(done, PokeReturnValue) and done.xcom_value["error_file_id"] == batch.error_file_id


def test_soft_fail_skips_a_cancelled_batch_in_poke_mode(mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 2000)
    MKA1Hook().cancel_batch(batch.id)
    wait_for(batch.id)

    with pytest.raises(MKA1BatchCancelledError):
        sensor(batch_id=batch.id).execute(make_context("wait"))
    with pytest.raises(AirflowSkipException):
        sensor(batch_id=batch.id, soft_fail=True).execute(make_context("wait"))


# -- reschedule -----------------------------------------------------------------------------------


def test_reschedule_mode_pokes_until_the_batch_is_done(emulator, mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 40)
    task = sensor(batch_id=batch.id, mode="reschedule")
    emulator.reset_calls()

    pokes = [task.poke(make_context("wait"))]
    while not pokes[-1]:
        time.sleep(0.05)  # the worker slot is free between pokes in reschedule mode
        pokes.append(task.poke(make_context("wait")))

    assert pokes[0] is False and len(pokes) >= 3
    assert isinstance(pokes[-1], PokeReturnValue)
    assert pokes[-1].xcom_value["status"] == "completed"
    assert emulator.calls(method="GET", path=BATCHES) == len(pokes)


# -- deferrable -----------------------------------------------------------------------------------


def test_deferrable_mode_defers_to_the_trigger_and_returns_the_final_batch(mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 20)
    task = sensor(batch_id=batch.id, deferrable=True, timeout=600, max_poll_interval=0.3)

    before = time.time()
    trigger = defer(task)
    assert trigger.batch_id == batch.id
    assert trigger.poll_interval == 0.05 and trigger.max_poll_interval == 0.3
    assert before + 600 <= trigger.deadline <= time.time() + 600

    result = resume(task, trigger)
    assert result["status"] == "completed" and result["output_file_id"]


def test_deferrable_mode_does_not_defer_for_a_finished_batch(mka1_conn, tmp_path) -> None:
    batch = wait_for(submit_batch(tmp_path, 2).id)

    result = sensor(batch_id=batch.id, deferrable=True).execute(make_context("wait"))

    assert result["id"] == batch.id and result["status"] == "completed"


@pytest.mark.parametrize("soft_fail", [False, True])
def test_deferrable_timeout_is_a_sensor_timeout(mka1_conn, tmp_path, soft_fail) -> None:
    batch = submit_batch(tmp_path, 2000)
    task = sensor(batch_id=batch.id, deferrable=True, timeout=0.4, soft_fail=soft_fail)

    trigger = defer(task)
    expected = AirflowSkipException if soft_fail else AirflowSensorTimeout
    with pytest.raises(expected, match="not terminal by the deadline"):
        resume(task, trigger)
    MKA1Hook().cancel_batch(batch.id)


def test_deferrable_outcome_errors_are_raised(mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 6, fail=[1, 2])
    task = sensor(batch_id=batch.id, deferrable=True, max_failed_ratio=0.2)

    trigger = defer(task)
    with pytest.raises(MKA1BatchPartialFailureError, match="2 of 6 requests failed"):
        resume(task, trigger)


def test_deferrable_error_event_fails_the_task(mka1_conn) -> None:
    task = sensor(batch_id="batch_doesnotexist", deferrable=True)
    trigger = MKA1BatchTrigger(batch_id="batch_doesnotexist", poll_interval=0.05)

    with pytest.raises(MKA1Error, match="404"):
        resume(task, trigger)


def test_resuming_without_an_event_is_a_clear_error() -> None:
    sensor = MKA1BatchSensor(task_id="wait", batch_id="batch_a")
    with pytest.raises(MKA1Error, match="without an event"):
        sensor.execute_complete(make_context(), None)
