"""Helpers of the job tests: request files and lists, an operator with fast polling, reading results."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.operators.mka1 import MKA1BatchJobOperator

ENDPOINT = "/v1/chat/completions"
FAST = {"poll_interval": 0.05, "max_poll_interval": 0.3}


def request_line(
    n: int, *, fail: Any = None, endpoint: str = ENDPOINT, content: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "mka1-small",
        "messages": [{"role": "user", "content": content or f"q{n}"}],
    }
    if fail is not None:
        body["emulator_fail"] = fail
    return {"custom_id": f"req-{n}", "method": "POST", "url": endpoint, "body": body}


def write_jsonl(path: Path, lines: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def job(tmp_path: Path, **kwargs: Any) -> MKA1BatchJobOperator:
    for key, value in FAST.items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("result_path", str(tmp_path / "results"))
    kwargs.setdefault("scratch_dir", str(tmp_path / "scratch"))
    return MKA1BatchJobOperator(task_id=kwargs.pop("task_id", "answer"), **kwargs)


@pytest.fixture(scope="module")
def emulator_session():
    """Job tests create many batches: on an emulator of their own (per module), so that they do not
    lengthen every later test's listing of the shared emulator's batches."""
    from airflow_provider_batches.emulator import run_emulator
    from tests.conftest import API_KEY, FAST_TIMINGS, OTHER_API_KEY

    with run_emulator(api_keys=(API_KEY, OTHER_API_KEY), **FAST_TIMINGS) as emu:
        yield emu


@pytest.fixture
def memory_fs():
    """``memory://`` ObjectStoragePaths on an fsspec memory filesystem: object storage without a cloud."""
    from fsspec.implementations.memory import MemoryFileSystem

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]

    fs = MemoryFileSystem()
    fs.store.clear()
    attach(protocol="memory", fs=fs)
    yield fs
    fs.store.clear()


def run_job(op: MKA1BatchJobOperator, context: dict[str, Any]) -> dict[str, Any]:
    """Run ``op`` as Airflow would: on each deferral, run the trigger to its event and resume."""
    import asyncio

    from airflow.providers.common.compat.sdk import TaskDeferred

    from tests.conftest import run_trigger

    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        pending = deferred
    while True:
        trigger = pending.trigger
        # Rebuilt from its serialized kwargs, as the triggerer does.
        _, kwargs = trigger.serialize()
        rebuilt = type(trigger)(**kwargs)
        events = asyncio.run(run_trigger(rebuilt, limit=60))
        assert len(events) == 1
        try:
            return getattr(op, pending.method_name)(context, events[0].payload, **(pending.kwargs or {}))
        except TaskDeferred as again:
            pending = again


@pytest.fixture(scope="module")
def own_emulator():
    """An emulator of this module's own, for tests that move its clock: at one line every 10,000 s, a
    batch runs 8 lines in its 24 h window, so moving the clock a day on expires any longer batch."""
    from airflow_provider_batches.emulator import run_emulator
    from tests.conftest import API_KEY

    timings = {"validation_seconds": 0.1, "lines_per_second": 0.0001, "finalizing_seconds": 0.1}
    with run_emulator(api_keys=(API_KEY,), **timings) as emu:
        yield emu


@pytest.fixture
def own_conn(own_emulator, monkeypatch) -> str:
    from tests.conftest import connection_json

    own_emulator.clear_faults()
    own_emulator.reset_calls()
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", connection_json(own_emulator.base_url))
    return "mka1_default"
