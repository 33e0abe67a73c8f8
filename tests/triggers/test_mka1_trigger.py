"""MKA1BatchTrigger, over HTTP against the emulator."""

from __future__ import annotations

import asyncio
import importlib
import json
import time

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS
from airflow.triggers.base import BaseTrigger

from airflow_provider_batches.exceptions import (
    MKA1BatchFailedError,
)
from airflow_provider_batches.hooks.mka1 import MKA1Hook, close_async_sessions
from airflow_provider_batches.models import Batch, BatchStatus
from airflow_provider_batches.outcome import check_batch_outcome
from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger, batch_from_event
from tests.conftest import API_KEY, connection_json, run_trigger, submit_batch, wait_for
from tests.triggers.conftest import deferred_on, needs_on_kill

BATCHES = "/api/v1/llm/batches/*"
FAST = {"poll_interval": 0.05, "max_poll_interval": 0.3}


def rebuild(trigger: BaseTrigger) -> BaseTrigger:
    """What the triggerer does: import the class path and call it with the serialized kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))


def start_like_triggerer(trigger: BaseTrigger) -> asyncio.Task:
    """Run ``trigger`` as the triggerer does: on Airflow 3.3+ through its real ``run_trigger``."""
    if AIRFLOW_V_3_3_PLUS:
        from airflow.jobs.triggerer_job_runner import TriggerRunner

        runner = TriggerRunner()
        runner.triggers[1] = {"task": None, "name": "mka1-test", "events": 0, "is_watcher": False}  # type: ignore[typeddict-item]
        task = asyncio.create_task(runner.run_trigger(1, trigger))
        runner.triggers[1]["task"] = task
        return task

    async def consume() -> None:
        async for _ in trigger.run():
            pass

    return asyncio.create_task(consume())


async def stop(task: asyncio.Task, *, user_action: bool) -> None:
    """Cancel a running trigger: by a user's action on the task, or by a triggerer shutdown."""
    message = None
    if user_action:
        from airflow.jobs.triggerer_job_runner import _USER_ACTION_CANCEL_MSG

        message = _USER_ACTION_CANCEL_MSG
    task.cancel(message)
    with pytest.raises(asyncio.CancelledError):
        await task
    await close_async_sessions()


async def polled(emulator, at_least: int = 1, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while emulator.calls(method="GET", path=BATCHES) < at_least:
        assert time.monotonic() < deadline, "the trigger never polled"
        await asyncio.sleep(0.02)


@pytest.fixture
def no_retry_conn(emulator, monkeypatch) -> str:
    """A connection whose hook does not retry by itself, so that every 503 reaches the trigger."""
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_NO_RETRY", connection_json(emulator.base_url, max_retries=0))
    return "mka1_no_retry"


# -- serialize ------------------------------------------------------------------------------------


def test_serialize_round_trip_carries_the_conn_id_not_the_key(mka1_conn) -> None:
    trigger = MKA1BatchTrigger(
        batch_id="batch_abc",
        mka1_conn_id=mka1_conn,
        on_behalf_of="user-42",
        poll_interval=5,
        max_poll_interval=120,
        deadline=1_900_000_000.5,
        error_budget=3,
        cancel_on_kill=False,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_batches.triggers.mka1.MKA1BatchTrigger"
    assert kwargs == {
        "batch_id": "batch_abc",
        "mka1_conn_id": "mka1_default",
        "on_behalf_of": "user-42",
        "poll_interval": 5,
        "max_poll_interval": 120,
        "deadline": 1_900_000_000.5,
        "error_budget": 3,
        "cancel_on_kill": False,
    }
    assert rebuild(trigger).serialize() == (classpath, kwargs)
    assert API_KEY not in json.dumps(kwargs) + repr(trigger)


async def test_rebuilt_trigger_runs_to_one_success_event_with_the_final_batch(mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 20, fail=[3])
    trigger = rebuild(MKA1BatchTrigger(batch_id=batch.id, **FAST))

    events = await run_trigger(trigger)

    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    assert payload["batch_id"] == batch.id
    final = Batch.model_validate(payload["batch"])
    assert final.status == BatchStatus.COMPLETED
    assert final.output_file_id and final.error_file_id
    assert final.request_counts.model_dump() == {"total": 20, "completed": 19, "failed": 1}
    assert json.loads(json.dumps(payload)) == payload


async def test_a_failed_batch_ends_with_a_terminal_event(mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 4, invalid=[2])

    (event,) = await run_trigger(MKA1BatchTrigger(batch_id=batch.id, **FAST))

    assert event.payload["status"] == "terminal"
    assert event.payload["batch"]["status"] == "failed"
    with pytest.raises(MKA1BatchFailedError, match="line 3"):
        check_batch_outcome(batch_from_event(event.payload))


# -- errors ---------------------------------------------------------------------------------------


async def test_survives_a_run_of_503s(emulator, no_retry_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 5, conn_id=no_retry_conn)
    emulator.add_fault(method="GET", path=BATCHES, kind="status", status=503, count=5)
    trigger = MKA1BatchTrigger(
        batch_id=batch.id,
        mka1_conn_id=no_retry_conn,
        poll_interval=0.02,
        max_poll_interval=0.1,
        error_budget=5,
    )

    (event,) = await run_trigger(trigger)

    assert event.payload["status"] == "success", event.payload
    assert emulator.calls(method="GET", path=BATCHES) >= 6


async def test_gives_up_once_the_error_budget_is_spent(emulator, no_retry_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 5, conn_id=no_retry_conn)
    emulator.add_fault(method="GET", path=BATCHES, kind="status", status=503, count=5)
    trigger = MKA1BatchTrigger(
        batch_id=batch.id,
        mka1_conn_id=no_retry_conn,
        poll_interval=0.02,
        max_poll_interval=0.1,
        error_budget=2,
    )

    (event,) = await run_trigger(trigger)

    assert event.payload["status"] == "error"
    assert "3 consecutive transient errors" in event.payload["message"]
    assert event.payload["error"]["status_code"] == 503
    assert emulator.calls(method="GET", path=BATCHES) == 3


async def test_stops_at_once_on_401(emulator, monkeypatch) -> None:
    bad_key = connection_json(emulator.base_url, api_key="wrong-key-0000")
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_BAD_KEY", bad_key)
    trigger = MKA1BatchTrigger(batch_id="batch_anything", mka1_conn_id="mka1_bad_key", **FAST)

    started = time.monotonic()
    (event,) = await run_trigger(trigger)

    assert time.monotonic() - started < 2
    payload = event.payload
    assert payload["status"] == "error"
    assert payload["batch"] is None
    assert payload["error"]["type"] == "MKA1AuthenticationError"
    assert payload["error"]["status_code"] == 401
    assert payload["error"]["request_id"]
    assert "401" in payload["message"] and payload["error"]["request_id"] in payload["message"]
    assert "wrong-key-0000" not in json.dumps(payload)
    assert emulator.calls(method="GET", path=BATCHES) == 1


async def test_stops_at_once_on_404(emulator, mka1_conn) -> None:
    (event,) = await run_trigger(MKA1BatchTrigger(batch_id="batch_doesnotexist", **FAST))

    assert event.payload["status"] == "error"
    assert event.payload["error"]["status_code"] == 404
    assert emulator.calls(method="GET", path=BATCHES) == 1


# -- deadline, restart, kill ----------------------------------------------------------------------


async def test_deadline_holds_across_a_triggerer_restart(emulator, mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 2000)  # about 10 s of work at the emulator's speed
    wait = 1.5
    deadline = time.time() + wait
    first = MKA1BatchTrigger(batch_id=batch.id, deadline=deadline, **FAST)

    running = start_like_triggerer(first)
    await polled(emulator, at_least=2)
    await stop(running, user_action=False)  # the triggerer shuts down...
    # ...and another one picks the trigger up once the deadline has passed
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.2)
    emulator.reset_calls()
    (event,) = await run_trigger(rebuild(first))

    assert event.payload["status"] == "timeout"
    assert event.payload["batch"]["status"] == "in_progress"
    # The original deadline: one last poll, then the timeout. A clock restarted by the restart would
    # go on polling (every 0.05 to 0.3 s) for another `wait` seconds.
    assert emulator.calls(method="GET", path=BATCHES) == 1
    # A shutdown is not a kill: the batch goes on.
    assert MKA1Hook().get_batch(batch.id).status == BatchStatus.IN_PROGRESS
    MKA1Hook().cancel_batch(batch.id)


async def test_a_deadline_already_passed_still_polls_once(emulator, mka1_conn, tmp_path) -> None:
    batch = wait_for(submit_batch(tmp_path, 2).id)
    trigger = MKA1BatchTrigger(batch_id=batch.id, deadline=time.time() - 60, **FAST)

    (event,) = await run_trigger(trigger)

    assert event.payload["status"] == "success"


# The states a user's action leaves: marked failed or success, cleared (None), the run deleted ({}).
@needs_on_kill
@pytest.mark.parametrize("task_states", [{"wait_3": "failed"}, {"wait_3": "success"}, {"wait_3": None}, {}])
async def test_user_killing_the_deferred_task_cancels_the_batch(
    emulator, mka1_conn, tmp_path, supervisor, task_states
) -> None:
    batch = submit_batch(tmp_path, 2000)
    comms = supervisor({"run_1": task_states})
    trigger = deferred_on(MKA1BatchTrigger(batch_id=batch.id, **FAST), map_index=3)

    running = start_like_triggerer(trigger)
    await polled(emulator, at_least=2)
    await stop(running, user_action=True)

    assert MKA1Hook().get_batch(batch.id).status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert emulator.calls(method="POST", path="/api/v1/llm/batches/*/cancel") == 1
    (asked,) = comms.asked
    assert (asked.dag_id, asked.task_ids, asked.run_ids) == ("mka1_dag", ["wait"], ["run_1"])
    assert asked.map_index == 3


@needs_on_kill
async def test_a_trigger_handed_over_while_the_task_is_still_deferred_leaves_the_batch_running(
    emulator, mka1_conn, tmp_path, supervisor, hook_logs
) -> None:
    """What a triggerer that missed its heartbeats does once it catches up: on_kill on a live task."""
    batch = submit_batch(tmp_path, 2000)
    supervisor({"run_1": {"wait": "deferred"}})
    trigger = deferred_on(MKA1BatchTrigger(batch_id=batch.id, **FAST))

    running = start_like_triggerer(trigger)
    await polled(emulator, at_least=2)
    await stop(running, user_action=True)

    assert MKA1Hook().get_batch(batch.id).status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    assert emulator.calls(method="POST", path="/api/v1/llm/batches/*/cancel") == 0
    handed_over = f"Trigger handed over, the task is still deferred; batch {batch.id} left running."
    assert handed_over in hook_logs.messages
    MKA1Hook().cancel_batch(batch.id)


@needs_on_kill
async def test_a_copy_told_after_the_task_resumed_does_not_cancel_a_finished_batch(
    emulator, mka1_conn, tmp_path, supervisor, hook_logs
) -> None:
    """The copy left behind in a hand-over, told after the other copy's event ended the task."""
    batch = wait_for(submit_batch(tmp_path, 2).id)
    supervisor({"run_1": {"wait": "success"}})
    trigger = deferred_on(MKA1BatchTrigger(batch_id=batch.id, **FAST))
    try:
        await trigger.on_kill()
    finally:
        await close_async_sessions()
    assert emulator.calls(method="POST", path="/api/v1/llm/batches/*/cancel") == 0
    assert f"Task no longer deferred; batch {batch.id} already completed." in hook_logs.messages


@needs_on_kill
async def test_cancel_on_kill_false_leaves_the_batch_running_without_asking(
    emulator, mka1_conn, tmp_path, supervisor
) -> None:
    batch = submit_batch(tmp_path, 2000)
    comms = supervisor({"run_1": {"wait": "failed"}})
    trigger = deferred_on(MKA1BatchTrigger(batch_id=batch.id, cancel_on_kill=False, **FAST))

    running = start_like_triggerer(trigger)
    await polled(emulator, at_least=2)
    await stop(running, user_action=True)

    assert MKA1Hook().get_batch(batch.id).status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    assert emulator.calls(method="POST", path="/api/v1/llm/batches/*/cancel") == 0
    assert comms.asked == []
    MKA1Hook().cancel_batch(batch.id)


async def test_on_kill_leaves_the_batch_running_when_the_task_state_cannot_be_read(
    emulator, mka1_conn, tmp_path, hook_logs
) -> None:
    """No task instance on the trigger (nor, before Airflow 3, a way to ask): the safe side, and a warning."""
    batch = submit_batch(tmp_path, 2000)
    trigger = MKA1BatchTrigger(batch_id=batch.id, **FAST)
    try:
        await trigger.on_kill()
    finally:
        await close_async_sessions()
    assert MKA1Hook().get_batch(batch.id).status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    assert emulator.calls(method="POST", path="/api/v1/llm/batches/*/cancel") == 0
    assert any(
        m.startswith("Task killed or handed over, its state unreadable (the trigger has no task instance)")
        and m.endswith(f"batch {batch.id} left running.")
        for m in hook_logs.messages
    )
    MKA1Hook().cancel_batch(batch.id)


@needs_on_kill
async def test_on_kill_leaves_the_batch_running_when_the_api_server_does_not_answer(
    emulator, mka1_conn, tmp_path, supervisor, hook_logs
) -> None:
    batch = submit_batch(tmp_path, 2000)
    supervisor(ConnectionError("API server unreachable"))
    trigger = deferred_on(MKA1BatchTrigger(batch_id=batch.id, **FAST))
    try:
        await trigger.on_kill()
    finally:
        await close_async_sessions()
    assert MKA1Hook().get_batch(batch.id).status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)
    assert any("state unreadable (API server unreachable)" in m for m in hook_logs.messages)
    MKA1Hook().cancel_batch(batch.id)


# -- the event loop -------------------------------------------------------------------------------


async def test_polling_a_slow_api_never_blocks_the_event_loop(
    emulator, mka1_conn, tmp_path, monkeypatch
) -> None:
    """No blocking call (a sync HTTP request, ``time.sleep``) runs on the triggerer's event loop while
    it polls a slow API. (How long the loop stalls is a figure of benchmarks/bare_poller.py.)"""
    import requests

    batch = submit_batch(tmp_path, 200)  # about 1.4 s: several polls of 0.3 s each
    emulator.set_latency(0.3)
    loop = asyncio.get_running_loop()
    blocking: list[str] = []

    def on_loop_flagged(original):
        def call(*args, **kwargs):
            try:
                if asyncio.get_running_loop() is loop:
                    blocking.append(original.__qualname__)
            except RuntimeError:
                pass  # another thread, outside any event loop
            return original(*args, **kwargs)

        return call

    monkeypatch.setattr(requests.Session, "send", on_loop_flagged(requests.Session.send))
    monkeypatch.setattr(time, "sleep", on_loop_flagged(time.sleep))
    (event,) = await run_trigger(MKA1BatchTrigger(batch_id=batch.id, **FAST))

    assert event.payload["status"] == "success"
    assert emulator.calls(method="GET", path=BATCHES) >= 3
    assert blocking == []
