"""Restarts: of the emulator under a waiting task, of the triggerer under a trigger, of a worker during
``create_batch`` and during a download. After each: no lost batch, no second batch, no partial file."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_batches.emulator import run_emulator
from tests.conftest import API_KEY, connection_json
from tests.reliability.support import assert_no_secret, make_context

REPO = Path(__file__).resolve().parents[2]


def _api(base_api_url: str, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(
        method, f"{base_api_url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30, **kwargs
    )
    response.raise_for_status()
    return response.json()


def _requests_file(lines: int, fail: set[int] = frozenset(), pad: int = 0) -> bytes:
    out = []
    for n in range(lines):
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": f"q{n}" + "x" * pad}]}
        if n in fail:
            body["emulator_fail"] = True
        out.append(
            json.dumps({"custom_id": f"r-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        )
    return ("\n".join(out) + "\n").encode()


def _upload(api_url: str, data: bytes, name: str = "in.jsonl") -> str:
    return _api(api_url, "POST", "/files", files={"file": (name, data)}, data={"purpose": "batch"})["id"]


def _create(api_url: str, file_id: str) -> str:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    return _api(api_url, "POST", "/batches", json=body)["id"]


def _wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")


class RestartableEmulator:
    """An emulator on a data directory that can be stopped and started again on the same port."""

    def __init__(self, data_dir: Path, **timings: Any) -> None:
        self.data_dir = data_dir
        self.timings = timings
        self.port = 0
        self._cm: Any = None
        self.emu: Any = None

    def start(self) -> Any:
        self._cm = run_emulator(api_keys=(API_KEY,), data_dir=self.data_dir, port=self.port, **self.timings)
        self.emu = self._cm.__enter__()
        self.port = int(self.emu.base_url.rsplit(":", 1)[1])
        return self.emu

    def stop(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)


@pytest.fixture
def restartable(tmp_path, monkeypatch):
    emulator = RestartableEmulator(
        tmp_path / "emulator-data", validation_seconds=0.3, lines_per_second=4.0, finalizing_seconds=0.3
    )
    emulator.start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MKA1_DEFAULT",
        connection_json(emulator.emu.base_url, timeout=2, max_retries=1, backoff_base=0.01),
    )
    yield emulator
    emulator.stop()


def _restart_during(emulator: RestartableEmulator, waiting: threading.Thread | None, downtime: float) -> None:
    api_url = emulator.emu.api_url
    emulator.stop()
    if waiting is not None:
        assert waiting.is_alive(), "the wait ended before the emulator went down"
    time.sleep(downtime)
    emulator.start()
    assert emulator.emu.api_url == api_url, "the emulator came back on another port"


def _assert_completed_with_its_data(api_url: str, batch_id: str, lines: int) -> dict[str, Any]:
    final = _api(api_url, "GET", f"/batches/{batch_id}")
    assert final["status"] == "completed"
    assert final["request_counts"] == {"total": lines, "completed": lines - 1, "failed": 1}
    content = requests.get(
        f"{api_url}/files/{final['output_file_id']}/content",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert content.status_code == 200 and len(content.content.splitlines()) == lines - 1
    return final


# ---- the emulator restarted on its data directory while a task waits --------------------------------


def test_sensor_waits_through_an_emulator_restart(restartable) -> None:
    from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

    api_url = restartable.emu.api_url
    lines = 8
    batch_id = _create(api_url, _upload(api_url, _requests_file(lines, fail={3})))
    sensor_done = threading.Event()
    restart: dict[str, Any] = {}

    def restart_mid_wait() -> None:
        # The sensor runs in the main thread (Airflow 2.11 refuses execute() from another thread).
        try:
            _wait_until(lambda: restartable.emu.calls(method="GET") >= 2 or sensor_done.is_set(), 30, "polls")
            restart["status_before"] = _api(api_url, "GET", f"/batches/{batch_id}")["status"]
            restart["sensor_waiting"] = not sensor_done.is_set()
            _restart_during(restartable, None, downtime=1.0)
            restart["sensor_waiting_after"] = not sensor_done.is_set()
        except BaseException as exc:
            restart["error"] = exc

    restarter = threading.Thread(target=restart_mid_wait, daemon=True)
    restarter.start()
    sensor = MKA1BatchSensor(
        task_id="wait", batch_id=batch_id, mode="poke", poke_interval=0.1, timeout=60, max_failed_ratio=0.5
    )
    try:
        result = sensor.execute(make_context())
    finally:
        sensor_done.set()
        restarter.join(60)
    assert "error" not in restart, repr(restart.get("error"))
    assert restart["sensor_waiting"] and restart["sensor_waiting_after"], restart
    assert restart["status_before"] not in ("completed", "failed"), restart
    final = _assert_completed_with_its_data(restartable.emu.api_url, batch_id, lines)
    assert result["id"] == batch_id
    assert result["output_file_id"] == final["output_file_id"]
    assert restartable.emu.calls(method="GET", path=f"/api/v1/llm/batches/{batch_id}") >= 1


def test_trigger_waits_through_an_emulator_restart(restartable) -> None:
    from airflow_provider_batches.hooks.mka1 import close_async_sessions
    from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger

    api_url = restartable.emu.api_url
    lines = 8
    batch_id = _create(api_url, _upload(api_url, _requests_file(lines, fail={3})))
    trigger = MKA1BatchTrigger(
        batch_id=batch_id, poll_interval=0.1, max_poll_interval=0.3, deadline=time.time() + 60
    )

    async def scenario() -> list[Any]:
        async def collect() -> list[Any]:
            return [event async for event in trigger.run()]

        task = asyncio.create_task(collect())
        await asyncio.to_thread(_wait_until, lambda: restartable.emu.calls(method="GET") >= 2, 30, "polling")
        assert not task.done()
        await asyncio.to_thread(_restart_during, restartable, None, 1.0)
        assert not task.done(), "the trigger gave up while the emulator was down"
        try:
            return await asyncio.wait_for(task, 60)
        finally:
            await close_async_sessions()

    events = asyncio.run(scenario())
    assert len(events) == 1
    event = events[0].payload
    assert event["status"] == "success", event
    final = _assert_completed_with_its_data(restartable.emu.api_url, batch_id, lines)
    assert event["batch"]["output_file_id"] == final["output_file_id"]


# ---- the triggerer restarted: run() cancelled, the trigger rebuilt from its stored kwargs -------------


def _rebuild(trigger) -> Any:
    """What a (new) triggerer does with the row it reads: import the class path, pass the kwargs."""
    classpath, kwargs = trigger.serialize()
    stored = json.loads(json.dumps(kwargs))  # the trigger table keeps JSON
    assert_no_secret(API_KEY, classpath, stored, where="the stored trigger kwargs")
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**stored)


async def _run_then_cancel(trigger, seconds: float) -> list[Any]:
    events: list[Any] = []

    async def collect() -> None:
        async for event in trigger.run():
            events.append(event)

    task = asyncio.create_task(collect())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return events


def test_trigger_resumed_after_a_triggerer_restart_keeps_the_original_deadline(tmp_path, monkeypatch) -> None:
    """A batch that stays validating: the rebuilt trigger times out at the deadline set before the restart,
    not a full timeout after it; and the restart did not cancel the batch."""
    from airflow_provider_batches.hooks.mka1 import close_async_sessions
    from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger

    with run_emulator(api_keys=(API_KEY,), data_dir=tmp_path / "data", validation_seconds=3600) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", connection_json(emu.base_url, max_retries=1))
        batch_id = _create(emu.api_url, _upload(emu.api_url, _requests_file(2)))
        deadline = time.time() + 2.0
        first = MKA1BatchTrigger(
            batch_id=batch_id, poll_interval=0.1, max_poll_interval=0.2, deadline=deadline
        )

        async def scenario() -> tuple[list[Any], list[Any], float]:
            try:
                before = await _run_then_cancel(first, 0.8)
                resumed = _rebuild(first)
                after = [event async for event in resumed.run()]
                return before, after, time.time()
            finally:
                await close_async_sessions()

        before, after, ended = asyncio.run(scenario())
        assert before == [], "the trigger fired before the restart"
        assert len(after) == 1
        event = after[0].payload
        assert event["status"] == "timeout", event
        assert deadline - 0.05 <= ended <= deadline + 1.0, (
            f"ended {ended - deadline:+.2f} s from the deadline"
        )
        assert emu.calls(method="POST", path="/api/v1/llm/batches/*/cancel") == 0
        assert _api(emu.api_url, "GET", f"/batches/{batch_id}")["status"] == "validating"


def test_deferred_sensor_times_out_at_its_original_deadline_across_a_triggerer_restart(
    tmp_path, monkeypatch
) -> None:
    """The same through the sensor: its timeout becomes the trigger's absolute deadline when it defers; a
    triggerer restart later, the rebuilt trigger still fires at that deadline and the sensor times out."""
    from airflow.providers.common.compat.sdk import AirflowSensorTimeout, TaskDeferred

    from airflow_provider_batches.hooks.mka1 import close_async_sessions
    from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

    with run_emulator(api_keys=(API_KEY,), data_dir=tmp_path / "data", validation_seconds=3600) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", connection_json(emu.base_url, max_retries=1))
        batch_id = _create(emu.api_url, _upload(emu.api_url, _requests_file(2)))

        def sensor() -> Any:
            return MKA1BatchSensor(
                task_id="wait", batch_id=batch_id, deferrable=True, poke_interval=0.1, timeout=2
            )

        deferred_at = time.time()
        with pytest.raises(TaskDeferred) as deferred:
            sensor().execute(make_context())
        trigger = deferred.value.trigger

        async def scenario() -> tuple[list[Any], list[Any], float]:
            try:
                before = await _run_then_cancel(trigger, 0.8)
                after = [event async for event in _rebuild(trigger).run()]
                return before, after, time.time()
            finally:
                await close_async_sessions()

        before, after, ended = asyncio.run(scenario())
        assert before == [] and len(after) == 1
        assert deferred_at + 2 - 0.05 <= ended <= deferred_at + 3.0, (
            f"fired {ended - deferred_at:.2f} s after defer"
        )
        with pytest.raises(AirflowSensorTimeout):
            sensor().resume_execution(deferred.value.method_name, {"event": after[0].payload}, make_context())
        assert emu.calls(method="POST", path="/api/v1/llm/batches/*/cancel") == 0


def test_trigger_resumed_after_a_triggerer_restart_sees_the_batch_through(emulator, mka1_conn) -> None:
    from airflow_provider_batches.hooks.mka1 import close_async_sessions
    from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger

    lines = 40
    batch_id = _create(emulator.api_url, _upload(emulator.api_url, _requests_file(lines, fail={5})))
    first = MKA1BatchTrigger(
        batch_id=batch_id, poll_interval=0.05, max_poll_interval=0.1, deadline=time.time() + 60
    )

    async def scenario() -> tuple[list[Any], list[Any]]:
        try:
            before = await _run_then_cancel(first, 0.3)
            return before, [event async for event in _rebuild(first).run()]
        finally:
            await close_async_sessions()

    before, after = asyncio.run(scenario())
    assert before == []
    assert [e.payload["status"] for e in after] == ["success"]
    final = _assert_completed_with_its_data(emulator.api_url, batch_id, lines)
    assert after[0].payload["batch"]["id"] == final["id"]
    assert emulator.calls(method="POST", path="/api/v1/llm/batches/*/cancel") == 0


# ---- a worker killed: during create_batch, during a download -----------------------------------------


def _worker_env(base_url: str) -> dict[str, str]:
    return {**os.environ, "AIRFLOW_CONN_MKA1_DEFAULT": connection_json(base_url, backoff_base=0.01)}


def _start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killed with everything it started
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _run_worker(env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = _start_worker(env, *args)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        _kill(proc)
    assert proc.returncode == 0, err[-3000:]
    assert_no_secret(API_KEY, out, err, where="a worker's output")
    return json.loads(out.strip().splitlines()[-1])


def _batches_of(api_url: str, file_id: str) -> list[dict[str, Any]]:
    return [
        b
        for b in _api(api_url, "GET", "/batches", params={"limit": 100})["data"]
        if b["input_file_id"] == file_id
    ]


def _kill_worker_when(worker: subprocess.Popen[str], condition: Callable[[], Any], what: str) -> None:
    try:
        _wait_until(condition, 90, what)
        time.sleep(0.2)
        assert worker.poll() is None, "the worker finished before it could be killed"
    finally:
        _kill(worker)
    assert worker.returncode == -signal.SIGKILL


def test_worker_killed_while_its_post_is_in_flight_then_retried_makes_one_batch(emulator) -> None:
    """The worker dies while POST /batches hangs in the gateway (which then drops it): the retry creates
    the batch, once."""
    file_id = _upload(emulator.api_url, _requests_file(3))
    run_id = f"manual__{uuid.uuid4().hex}"
    env = _worker_env(emulator.base_url)
    emulator.add_fault(method="POST", path="/api/v1/llm/batches", kind="stall", seconds=2.0, count=1)
    worker = _start_worker(env, "create", run_id, file_id)
    _kill_worker_when(
        worker, lambda: emulator.calls(method="POST", path="/api/v1/llm/batches") == 1, "POST sent"
    )
    time.sleep(2.0)  # the stalled request is over (a task retry comes after its retry_delay)
    assert _batches_of(emulator.api_url, file_id) == []

    retried = _run_worker(env, "create", run_id, file_id)

    assert [b["id"] for b in _batches_of(emulator.api_url, file_id)] == [retried["batch_id"]]
    assert emulator.calls(method="POST", path="/api/v1/llm/batches") == 2


def test_worker_killed_after_the_gateway_created_its_batch_then_retried_reattaches(emulator) -> None:
    """The nasty case: POST /batches took effect but the answer never came back (connection dropped), and
    the worker dies before it learns the batch id. The retry must find that batch, not bill a second."""
    file_id = _upload(emulator.api_url, _requests_file(3))
    run_id = f"manual__{uuid.uuid4().hex}"
    env = _worker_env(emulator.base_url)
    # list -> POST (created, then the connection is cut) -> list again (slow): killed during it. Every
    # listing call stalls, however many pages the shared emulator's batches take.
    emulator.add_fault(method="GET", path="/api/v1/llm/batches", kind="stall", seconds=1.5, count=1000)
    emulator.add_fault(method="POST", path="/api/v1/llm/batches", kind="drop", count=1)
    worker = _start_worker(env, "create", run_id, file_id)
    _kill_worker_when(
        worker,
        lambda: emulator.calls(method="POST", path="/api/v1/llm/batches") == 1,
        "the worker's POST was dropped, and it lists again to find what it may have created",
    )
    emulator.clear_faults()
    created = _batches_of(emulator.api_url, file_id)
    assert len(created) == 1, "the dropped POST should have created the batch"

    retried = _run_worker(env, "create", run_id, file_id)

    assert retried["batch_id"] == created[0]["id"], (
        "the retry did not reattach to the batch of the killed try"
    )
    assert [b["id"] for b in _batches_of(emulator.api_url, file_id)] == [created[0]["id"]]
    assert emulator.calls(method="POST", path="/api/v1/llm/batches") == 1, "the retry sent a second POST"


@pytest.fixture(scope="module")
def killed_download(emulator_session, tmp_path_factory) -> dict[str, Any]:
    """A download SIGKILLed after its first 1 MiB chunk, then run again to the end (once per module)."""
    emulator = emulator_session
    data = _requests_file(2500, pad=1500)  # about 4 MiB: several 1 MiB chunks
    assert len(data) > 3 * 1024 * 1024
    file_id = _upload(emulator.api_url, data, "big.jsonl")
    folder = tmp_path_factory.mktemp("download") / "results"
    folder.mkdir()
    destination = folder / "results.jsonl"
    env = _worker_env(emulator.base_url)

    worker = _start_worker(env, "download", file_id, str(destination), "slow")
    try:
        assert worker.stdout is not None
        for line in worker.stdout:  # the worker's own log lines go to stdout as well
            if line.strip() == "chunk":
                break
        else:
            pytest.fail(
                f"the download never wrote a chunk: {worker.stderr.read()[-3000:] if worker.stderr else ''}"
            )
    finally:
        _kill(worker)
    assert worker.returncode == -signal.SIGKILL
    after_kill = destination.exists()
    result = _run_worker(env, "download", file_id, str(destination))
    return {
        "data": data,
        "folder": folder,
        "destination": destination,
        "after_kill": after_kill,
        "result": result,
    }


def test_download_killed_half_way_leaves_no_file_and_the_retry_completes(killed_download) -> None:
    data, destination = killed_download["data"], killed_download["destination"]
    assert killed_download["after_kill"] is False, "a killed download left a partial file at the destination"
    assert destination.read_bytes() == data
    assert killed_download["result"] == {
        "path": str(destination),
        "bytes": len(data),
        "lines": data.count(b"\n"),
    }


def test_download_killed_half_way_leaves_no_temporary_file_behind(killed_download) -> None:
    folder, destination = killed_download["folder"], killed_download["destination"]
    leftovers = sorted(p.name for p in folder.iterdir() if p != destination)
    assert leftovers == [], f"temporary files left next to the destination: {leftovers}"
