"""MKA1BatchJobTrigger over HTTP: one event when every batch is terminal, its deadline across a triggerer
restart, stalled batches cancelled, permanent errors; and the job polling policy on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from airflow_provider_batches.exceptions import MKA1ServerError
from airflow_provider_batches.hooks.mka1 import close_async_sessions
from airflow_provider_batches.jobs.waiting import JobWait
from airflow_provider_batches.triggers.mka1_job import MKA1BatchJobTrigger
from tests.conftest import make_batch, run_trigger, submit_batch
from tests.jobs.conftest import emulator_session  # noqa: F401 (the job tests' own emulator)
from tests.triggers.conftest import deferred_on, needs_on_kill

CANCELS = "/api/v1/llm/batches/*/cancel"
FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2}


def _rebuild(trigger: MKA1BatchJobTrigger) -> MKA1BatchJobTrigger:
    """What a new triggerer does: the trigger again, from exactly the kwargs the trigger table stores."""
    _, kwargs = trigger.serialize()
    return MKA1BatchJobTrigger(**kwargs)


async def _run_then_cancel(trigger: MKA1BatchJobTrigger, seconds: float) -> list[Any]:
    events: list[Any] = []

    async def consume() -> None:
        async for event in trigger.run():
            events.append(event)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return events


def test_one_event_once_every_batch_is_terminal(emulator, mka1_conn, tmp_path) -> None:
    batches = [submit_batch(tmp_path, count=n, fail=[0] if n == 8 else []) for n in (3, 8, 30)]
    trigger = MKA1BatchJobTrigger(batch_ids=[b.id for b in batches], round_no=1, **FAST)

    events = asyncio.run(run_trigger(trigger))

    assert len(events) == 1
    event = events[0].payload
    assert event["status"] == "success" and event["round_no"] == 1 and event["stalled"] == []
    assert {b["status"] for b in event["batches"].values()} == {"completed"}
    assert event["batches"][batches[1].id]["request_counts"] == {"total": 8, "completed": 7, "failed": 1}


def test_a_triggerer_restart_keeps_the_deadline_and_the_batches(emulator, mka1_conn, tmp_path) -> None:
    batches = [submit_batch(tmp_path, count=2000) for _ in range(2)]  # 10 s at the test pace
    deadline = time.time() + 1.5
    first = MKA1BatchJobTrigger(batch_ids=[b.id for b in batches], deadline=deadline, **FAST)

    async def scenario() -> tuple[list[Any], list[Any], float]:
        try:
            before = await _run_then_cancel(first, 0.6)
            after = [event async for event in _rebuild(first).run()]
            return before, after, time.time()
        finally:
            await close_async_sessions()

    before, after, ended = asyncio.run(scenario())

    assert before == [] and len(after) == 1
    assert (
        after[0].payload["status"] == "timeout" and "not done by the deadline" in after[0].payload["message"]
    )
    assert deadline - 0.05 <= ended <= deadline + 1.0, f"ended {ended - deadline:+.2f} s from the deadline"
    assert emulator.calls(method="POST", path=CANCELS) == 0  # a restart is not a kill


def test_the_event_carries_the_jobs_start_and_deadline(emulator, mka1_conn, tmp_path) -> None:
    # `airflow dags test` (3.3) resumes a deferred task without the kwargs it deferred with.
    batch = submit_batch(tmp_path, count=2)
    deadline, started = time.time() + 60, time.time() - 5
    trigger = MKA1BatchJobTrigger(batch_ids=[batch.id], deadline=deadline, started=started, **FAST)

    events = asyncio.run(run_trigger(_rebuild(trigger)))

    assert events[0].payload["deadline"] == deadline and events[0].payload["started"] == started


def test_a_stalled_batch_is_cancelled_and_the_wait_goes_on(emulator, mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, count=3)
    # Its counts do not move while it validates (0.2 s): longer than stall_timeout, so it is cancelled.
    trigger = MKA1BatchJobTrigger(batch_ids=[batch.id], stall_timeout=0.01, **FAST)

    events = asyncio.run(run_trigger(trigger))

    event = events[0].payload
    assert event["status"] == "success" and event["stalled"] == [batch.id]
    assert event["batches"][batch.id]["status"] in ("cancelled", "completed")
    assert emulator.calls(method="POST", path=CANCELS) == 1


def test_a_permanent_error_ends_the_wait_with_its_class(emulator, mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, count=3)
    emulator.add_fault(
        method="GET", path=f"/api/v1/llm/batches/{batch.id}", kind="status", status=404, count=1
    )

    events = asyncio.run(run_trigger(MKA1BatchJobTrigger(batch_ids=[batch.id], **FAST)))

    event = events[0].payload
    assert event["status"] == "error" and event["error"]["status_code"] == 404


@needs_on_kill
def test_on_kill_cancels_the_unfinished_batches(emulator, mka1_conn, tmp_path, supervisor) -> None:
    slow, done = submit_batch(tmp_path, count=2000), submit_batch(tmp_path, count=1)
    supervisor({"run_1": {"wait": "failed"}})
    trigger = deferred_on(MKA1BatchJobTrigger(batch_ids=[slow.id, done.id], **FAST))

    async def scenario() -> None:
        try:
            await _run_then_cancel(trigger, 0.8)
            await trigger.on_kill()
        finally:
            await close_async_sessions()

    asyncio.run(scenario())
    assert emulator.calls(method="POST", path=CANCELS) == 1


@needs_on_kill
def test_on_kill_of_a_trigger_handed_over_cancels_nothing(
    emulator, mka1_conn, tmp_path, supervisor, hook_logs
) -> None:
    slow = submit_batch(tmp_path, count=2000)
    supervisor({"run_1": {"wait": "deferred"}})
    trigger = deferred_on(MKA1BatchJobTrigger(batch_ids=[slow.id], round_no=2, **FAST))

    async def scenario() -> None:
        try:
            await _run_then_cancel(trigger, 0.5)
            await trigger.on_kill()
        finally:
            await close_async_sessions()

    asyncio.run(scenario())
    assert emulator.calls(method="POST", path=CANCELS) == 0
    assert (
        "Trigger handed over, the task is still deferred; the batches of round 2 left running."
        in hook_logs.messages
    )


def test_the_policy_polls_each_batch_at_its_own_pace_and_reports_stalls() -> None:
    now = [1000.0]
    wait = JobWait(
        ["batch_a", "batch_b"],
        poll_interval=10,
        max_poll_interval=60,
        error_budget=1,
        deadline=1500.0,
        stall_timeout=100,
        clock=lambda: now[0],
    )
    due, delay = wait.next_polls() or ([], -1)
    assert sorted(due) == ["batch_a", "batch_b"] and delay == 0
    wait.observe(make_batch("in_progress", total=10, completed=1).model_copy(update={"id": "batch_a"}))
    wait.observe(make_batch("completed", total=5, completed=5).model_copy(update={"id": "batch_b"}))
    assert wait.totals() == {"requests": 15, "completed": 6, "failed": 0, "terminal": 1, "batches": 2}
    due, delay = wait.next_polls() or ([], -1)
    assert due == ["batch_a"] and 9 <= delay <= 11  # the terminal batch is never polled again
    now[0] += 101
    assert wait.stalled() == ["batch_a"]
    assert wait.observe_error("batch_a", MKA1ServerError(503, "busy")) is True
    assert wait.observe_error("batch_a", MKA1ServerError(503, "busy")) is False  # budget of 1 spent
    now[0] = 1500.0
    assert wait.next_polls() is None and not wait.done
