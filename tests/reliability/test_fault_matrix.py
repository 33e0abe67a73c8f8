"""The fault matrix: every fault the emulator injects x every way of waiting on a batch.

Transient faults (429 with and without Retry-After, 500, 502 HTML, 503, 504, a stall past the read
timeout, a connection closed mid-answer, a truncated body) hit ``TRANSIENT_COUNT`` consecutive
``GET /batches/{id}``: more than the hook's own retries (``max_retries=1``), so that the wait itself
(the sensor's next poke, the poller's and the trigger's error budget) has to carry on. The batch must
still end with the right outcome. Permanent faults (401, 403, 404, a 200 whose body is not a Batch) must
fail the task at once, after exactly one request, with a message naming the status, the server's message
and the request id.

Each cell records (outcome, requests made to GET /batches/{id}); the table is printed at the end of the
run (see conftest.py) and ``test_every_cell_of_the_matrix_ran`` asserts that all of it ran as expected.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from airflow_provider_batches.exceptions import MKA1Error
from tests.conftest import API_KEY, connection_json
from tests.reliability.matrix import (
    FAULTS,
    MATRIX,
    MAX_RETRIES,
    MODES,
    READ_TIMEOUT,
    RETRY_AFTER,
    TRANSIENT_COUNT,
    Cell,
    FaultSpec,
)
from tests.reliability.support import (
    FakeTI,
    assert_no_secret,
    exception_texts,
    make_context,
    patch_reschedule_start,
)

POLL = 0.05
REQUEST_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}#\d+")
LINES = 3  # one of which the emulator fails on purpose: the outcome is "completed, 2 of 3"
BATCH_GLOB = "/api/v1/llm/batches/*"


def _api(emulator, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(
        method,
        f"{emulator.api_url}{path}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
        **kwargs,
    )
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def input_file_id(emulator_session) -> str:
    lines = []
    for n in range(LINES):
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": f"q{n}"}]}
        if n == 1:
            body["emulator_fail"] = True
        lines.append(
            json.dumps({"custom_id": f"r-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        )
    data = ("\n".join(lines) + "\n").encode()
    return _api(
        emulator_session, "POST", "/files", files={"file": ("m.jsonl", data)}, data={"purpose": "batch"}
    )["id"]


@pytest.fixture
def matrix_conn(emulator, monkeypatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MKA1_DEFAULT",
        connection_json(emulator.base_url, timeout=READ_TIMEOUT, max_retries=MAX_RETRIES, backoff_base=0.01),
    )


def _sensor(batch_id: str, **kwargs: Any):
    from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

    return MKA1BatchSensor(
        task_id="wait",
        batch_id=batch_id,
        poke_interval=POLL,
        max_poll_interval=2 * POLL,
        timeout=60,
        max_failed_ratio=0.5,
        **kwargs,
    )


def _operator(input_file_id: str, **kwargs: Any):
    from airflow_provider_batches.operators.mka1 import MKA1BatchOperator

    return MKA1BatchOperator(
        task_id="batch",
        input_file_id=input_file_id,
        endpoint="/v1/chat/completions",
        poll_interval=POLL,
        max_poll_interval=2 * POLL,
        timeout=60,
        max_failed_ratio=0.5,
        **kwargs,
    )


def run_trigger_to_event(trigger) -> dict[str, Any]:
    """What the triggerer does: rebuild the trigger from its serialized form, run it to its one event."""
    from airflow_provider_batches.hooks.mka1 import close_async_sessions

    classpath, kwargs = trigger.serialize()
    assert_no_secret(API_KEY, classpath, kwargs, where="the trigger's kwargs")
    json.dumps(kwargs)  # what the triggerer stores must be plain JSON
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)

    async def run() -> list[Any]:
        try:
            return [event async for event in rebuilt.run()]
        finally:
            await close_async_sessions()

    events = asyncio.run(run())
    assert len(events) == 1, f"the trigger yielded {len(events)} events"
    return events[0].payload


def _resume(task, ti: FakeTI, deferred, event: dict[str, Any]) -> Any:
    """The worker after the trigger fired: a fresh task object resumes at the deferral's method."""
    return task.resume_execution(
        deferred.method_name, {**(deferred.kwargs or {}), "event": event}, make_context(ti)
    )


def _deferred_exception():
    from airflow.providers.common.compat.sdk import TaskDeferred

    return TaskDeferred


def _reschedule_exception():
    try:  # Airflow 3
        from airflow.sdk.exceptions import AirflowRescheduleException
    except ImportError:  # Airflow 2
        from airflow.exceptions import AirflowRescheduleException
    return AirflowRescheduleException


def run_mode(mode: str, fault: FaultSpec, emulator, input_file_id: str, monkeypatch) -> tuple[Any, str]:
    """Wait on a fresh batch in ``mode`` with ``fault`` injected from the start of the wait.

    :return: the task's result (the sensor's batch dict or the operator's output_file_id) and the batch id.
    """
    ti = FakeTI()
    TaskDeferred = _deferred_exception()

    def inject(batch_id: str | None = None) -> None:
        fault.add_to(emulator, f"/api/v1/llm/batches/{batch_id}" if batch_id else BATCH_GLOB)

    if mode.startswith("sensor"):
        batch_id = _api(
            emulator,
            "POST",
            "/batches",
            json={
                "input_file_id": input_file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )["id"]
        if mode == "sensor poke":
            inject(batch_id)
            return _sensor(batch_id, mode="poke").execute(make_context(ti)), batch_id
        if mode == "sensor reschedule":
            ti.first_reschedule_date = datetime.now(UTC)
            patch_reschedule_start(monkeypatch, ti.first_reschedule_date)
            inject(batch_id)
            for _ in range(400):
                try:  # every reschedule is a new task process: a fresh sensor object each time
                    return _sensor(batch_id, mode="reschedule").execute(make_context(ti)), batch_id
                except _reschedule_exception():
                    time.sleep(POLL)
            raise AssertionError("the sensor was still rescheduling after 400 pokes")
        assert mode == "sensor deferred"
        with pytest.raises(TaskDeferred) as deferred:
            _sensor(batch_id, deferrable=True).execute(make_context(ti))
        inject(batch_id)
        event = run_trigger_to_event(deferred.value.trigger)
        return _resume(_sensor(batch_id, deferrable=True), ti, deferred.value, event), batch_id

    if mode == "operator sync":
        inject()
        result = _operator(input_file_id).execute(make_context(ti))
        return result, ti.xcom["batch_id"]
    assert mode == "operator deferred"
    with pytest.raises(TaskDeferred) as deferred:
        _operator(input_file_id, deferrable=True).execute(make_context(ti))
    inject()
    event = run_trigger_to_event(deferred.value.trigger)
    result = _resume(_operator(input_file_id, deferrable=True), ti, deferred.value, event)
    return result, ti.xcom["batch_id"]


CELLS = [pytest.param(f, m, id=f"{f.name}|{m}") for f in FAULTS for m in MODES]


@pytest.mark.parametrize(("fault", "mode"), CELLS)
def test_cell(fault: FaultSpec, mode: str, emulator, matrix_conn, input_file_id, monkeypatch) -> None:
    emulator.reset_calls()
    started = time.monotonic()
    outcome, ok = "?", False
    try:
        if fault.transient:
            result, batch_id = run_mode(mode, fault, emulator, input_file_id, monkeypatch)
            final = _api(emulator, "GET", f"/batches/{batch_id}")
            assert final["status"] == "completed"
            assert final["request_counts"] == {"total": LINES, "completed": LINES - 1, "failed": 1}
            if mode.startswith("sensor"):
                assert result["id"] == batch_id and result["status"] == "completed"
                assert result["output_file_id"] == final["output_file_id"]
                assert result["request_counts"] == final["request_counts"]
            else:
                assert result == final["output_file_id"] and result
            requests_made = emulator.calls(method="GET", path=BATCH_GLOB)
            # every fault was served, each to its own request, and the wait went on after them
            assert requests_made > TRANSIENT_COUNT, requests_made
            assert not [f for f in emulator.faults() if f["method"] == "GET"], emulator.faults()
            if "Retry-After" in fault.name:
                assert time.monotonic() - started >= RETRY_AFTER, "Retry-After was not honoured"
            if fault.name.startswith("stall"):
                assert time.monotonic() - started >= READ_TIMEOUT
            outcome = f"ok {LINES - 1}/{LINES}"
        else:
            with pytest.raises(MKA1Error) as info:
                run_mode(mode, fault, emulator, input_file_id, monkeypatch)
            message = str(info.value)
            assert str(fault.status) in message, message
            if fault.server_message:
                assert fault.server_message in message, message
            assert REQUEST_ID.search(message), f"no request id in {message!r}"
            for text in exception_texts(info.value):
                assert_no_secret(API_KEY, text, where="a task failure")
            requests_made = emulator.calls(method="GET", path=BATCH_GLOB)
            # once: the faulted request is the last one (the deferred sensor pokes once before deferring)
            expected = 2 if mode == "sensor deferred" else 1
            assert requests_made == expected, f"{requests_made} requests; a permanent error was retried"
            outcome = (
                f"failed: {type(info.value).__name__.removeprefix('MKA1').removesuffix('Error') or 'Error'}"
            )
        ok = True
    finally:
        MATRIX.record(
            Cell(
                fault.name,
                mode,
                outcome if ok else "UNEXPECTED",
                emulator.calls(method="GET", path=BATCH_GLOB),
                time.monotonic() - started,
                ok,
            )
        )


def test_a_deferred_failure_keeps_the_error_class(emulator, matrix_conn, input_file_id, monkeypatch) -> None:
    from airflow_provider_batches.exceptions import MKA1AuthenticationError

    fault = next(f for f in FAULTS if f.name == "401")
    with pytest.raises(MKA1Error) as info:
        run_mode("operator deferred", fault, emulator, input_file_id, monkeypatch)
    assert isinstance(info.value, MKA1AuthenticationError), type(info.value).__mro__
    assert info.value.status_code == 401


def test_every_cell_of_the_matrix_ran() -> None:
    """The matrix is asserted whole: when it was selected in full, every cell ran and was as expected."""
    if len(MATRIX.cells) < len(FAULTS) * len(MODES):
        pytest.skip(f"only {len(MATRIX.cells)} of {len(FAULTS) * len(MODES)} cells were selected")
    bad = [f"{c.fault} x {c.mode}: {c.outcome}" for c in MATRIX.cells.values() if not c.ok]
    assert not bad, bad
