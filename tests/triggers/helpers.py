"""
Helpers shared by the trigger, sensor and operator tests: request files, batches on the emulator, a task
context whose ``ti`` records XComs, and running a trigger to its event.

Candidates for ``tests/conftest.py`` if other suites need them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_batches.hooks.mka1 import MKA1Hook, close_async_sessions
from airflow_provider_batches.models import Batch

ENDPOINT = "/v1/chat/completions"


def make_batch(status: str, total: int = 0, completed: int = 0, failed: int = 0, **fields: Any) -> Batch:
    """A Batch as the API would answer it, without a server: for the outcome rule and the poller."""
    return Batch.model_validate(
        {
            "id": "batch_x",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-x",
            "completion_window": "24h",
            "status": status,
            "created_at": 0,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            **fields,
        }
    )


def write_requests(
    path: Path, count: int = 5, *, fail: Iterable[int] = (), invalid: Iterable[int] = ()
) -> Path:
    """Write ``count`` chat requests; lines in ``fail`` fail on purpose, those in ``invalid`` are not JSON."""
    fail, invalid = set(fail), set(invalid)
    with path.open("w", encoding="utf-8") as f:
        for n in range(count):
            if n in invalid:
                f.write("{not json\n")
                continue
            body: dict[str, Any] = {"model": "mka1-small", "messages": [{"role": "user", "content": f"q{n}"}]}
            if n in fail:
                body["emulator_fail"] = True
            line = {"custom_id": f"req-{n}", "method": "POST", "url": ENDPOINT, "body": body}
            f.write(json.dumps(line) + "\n")
    return path


def submit_batch(
    tmp_path: Path,
    count: int = 5,
    *,
    fail: Iterable[int] = (),
    invalid: Iterable[int] = (),
    conn_id: str = "mka1_default",
) -> Batch:
    """Upload a request file and create a batch from it (no idempotency key)."""
    hook = MKA1Hook(mka1_conn_id=conn_id)
    path = tmp_path / f"requests-{time.monotonic_ns()}.jsonl"
    write_requests(path, count, fail=fail, invalid=invalid)
    return hook.create_batch(hook.upload_file(path).id, ENDPOINT)


def wait_for(batch_id: str, *, timeout: float = 15.0, conn_id: str = "mka1_default") -> Batch:
    """Poll (sync) until the batch is terminal."""
    hook = MKA1Hook(mka1_conn_id=conn_id)
    deadline = time.monotonic() + timeout
    while True:
        batch = hook.get_batch(batch_id)
        if batch.is_terminal or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


async def run_trigger(trigger: BaseTrigger, limit: float = 20.0) -> list[TriggerEvent]:
    """Run a trigger's ``run()`` to its end and return every event it yielded."""

    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    try:
        return await asyncio.wait_for(collect(), limit)
    finally:
        await close_async_sessions()


class RecordingTaskInstance:
    """Just enough of a task instance for ``execute``: identity, and ``xcom_push`` that records."""

    def __init__(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = 1
        self.xcoms: dict[str, Any] = {}
        self.pushed: list[str] = []

    def xcom_push(self, key: str, value: Any, **kwargs: Any) -> None:
        json.dumps(value)  # what Airflow would store must be JSON
        self.xcoms[key] = value
        self.pushed.append(key)

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **kwargs: Any) -> Any:
        return self.xcoms.get(key)


def make_context(
    task_id: str = "batch", *, dag_id: str = "mka1_tests", run_id: str | None = None, map_index: int = -1
) -> dict[str, Any]:
    """A task context; a new DAG run each time unless ``run_id`` is given (tries of one task share it)."""
    run_id = run_id or f"manual__{uuid.uuid4().hex}"
    ti = RecordingTaskInstance(dag_id, run_id, task_id, map_index)
    return {"ti": ti, "task_instance": ti, "run_id": run_id}
