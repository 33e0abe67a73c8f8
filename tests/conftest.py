"""
Shared fixtures and helpers: an isolated Airflow home, an emulator of the MKA1 API on 127.0.0.1, hostile
inputs, request files, batches on the emulator, a task context whose ``ti`` records XComs, and running a
trigger to its event. (Our modules are imported inside the helpers: Airflow must not load before the
environment below is set.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    from airflow_provider_batches.models import Batch

# Airflow reads its configuration when first imported: isolate it before any test module imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mka1-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"

API_KEY = "test-key-5f1c9e"
OTHER_API_KEY = "other-key-77ab02"
# Fast enough for a quick suite, slow enough that a test can see each status on the way.
FAST_TIMINGS = {"validation_seconds": 0.2, "lines_per_second": 200.0, "finalizing_seconds": 0.2}


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[object]:
    from airflow_provider_batches.emulator import run_emulator

    with run_emulator(api_keys=(API_KEY, OTHER_API_KEY), **FAST_TIMINGS) as emu:
        yield emu


@pytest.fixture
def emulator(emulator_session) -> Iterator[object]:
    """The shared emulator, with faults, latency, rate limit and call counts reset around each test."""
    emu = emulator_session
    emu.clear_faults()
    emu.set_latency(0.0)
    emu.set_rate_limit(None)
    emu.reset_calls()
    yield emu
    emu.clear_faults()
    emu.set_latency(0.0)
    emu.set_rate_limit(None)


def connection_json(base_url: str, api_key: str = API_KEY, **extra: object) -> str:
    return json.dumps({"conn_type": "mka1", "host": base_url, "password": api_key, "extra": extra})


@pytest.fixture
def mka1_conn(emulator, monkeypatch) -> str:
    """`mka1_default` pointing at the emulator, as a user would set it: an AIRFLOW_CONN_ variable."""
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", connection_json(emulator.base_url))
    return "mka1_default"


# -- hostile inputs: every check must refuse these before a request is sent --------------------------

HOSTILE_IDS = [
    "",
    " ",
    "../x",
    "..",
    "batch_1/../../files",
    "batch_1/cancel",
    "%2F",
    "batch_1%2Fcancel",
    "%2e%2e",
    "batch_1\r\nX-Injected: 1",
    "batch_1\n",
    "batch_1\r",
    "batch\x00abc",
    "batch\x1b",
    "batch 1",
    "\tbatch_1",
    "a" * 129,
    "b" * 10_000,
    "bätch_1",
    "批次",
    "batch\u2215abc",
    "batch\u200babc",
    "_batch",
    "-batch",
    "batch_1?limit=1",
    "batch_1#x",
    "batch:1",
    "https://evil.example/x",
    None,
    123,
]


HOSTILE_HEADER_VALUES = [
    "",
    " ",
    " user",
    "user ",
    "user\r\nX-Injected: 1",
    "user\nAuthorization: Bearer x",
    "user\r",
    "user\x00",
    "user\x07",
    "user\x7f",
    "üser",
    "user\u2028",
    "u" * 257,
    None,
    42,
]


# -- batches, contexts and triggers ----------------------------------------------------------------

ENDPOINT = "/v1/chat/completions"


def make_batch(status: str, total: int = 0, completed: int = 0, failed: int = 0, **fields: Any) -> Batch:
    """A Batch as the API would answer it, without a server: for the outcome rule and the poller."""
    from airflow_provider_batches.models import Batch

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
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

    hook = MKA1Hook(mka1_conn_id=conn_id)
    path = tmp_path / f"requests-{time.monotonic_ns()}.jsonl"
    write_requests(path, count, fail=fail, invalid=invalid)
    return hook.create_batch(hook.upload_file(path).id, ENDPOINT)


def wait_for(batch_id: str, *, timeout: float = 15.0, conn_id: str = "mka1_default") -> Batch:
    """Poll (sync) until the batch is terminal."""
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

    hook = MKA1Hook(mka1_conn_id=conn_id)
    deadline = time.monotonic() + timeout
    while True:
        batch = hook.get_batch(batch_id)
        if batch.is_terminal or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


async def run_trigger(trigger: BaseTrigger, limit: float = 20.0) -> list[TriggerEvent]:
    """Run a trigger's ``run()`` to its end and return every event it yielded."""
    from airflow_provider_batches.transport.sessions import close_async_sessions

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


class Logs:
    """What the code under test logged: stdlib records (Airflow 2) and structlog events (Airflow 3)."""

    def __init__(self, caplog: pytest.LogCaptureFixture, events: list[dict[str, object]]) -> None:
        self._caplog = caplog
        self._events = events

    @property
    def messages(self) -> list[str]:
        # A record can reach caplog's handler twice (root and airflow.task): count it once.
        unique = {id(r): r for r in self._caplog.records}.values()
        records = [r.getMessage() + (r.exc_text or "") for r in unique]
        return records + [f"{e.get('event')}{e.get('exception', '')}" for e in self._events]


@pytest.fixture
def hook_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    """
    Every log line at DEBUG and above. Airflow 3's hooks and triggers log through structlog, which caplog
    misses.
    """
    caplog.set_level(logging.DEBUG)
    # Airflow 2's task loggers do not propagate to the root logger that caplog listens to.
    task_logger = logging.getLogger("airflow.task")
    saved_level = task_logger.level
    task_logger.addHandler(caplog.handler)
    task_logger.setLevel(logging.DEBUG)
    try:
        yield from _structlog_events(caplog)
    finally:
        task_logger.removeHandler(caplog.handler)
        task_logger.setLevel(saved_level)


def _structlog_events(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    try:
        import structlog
        from structlog.testing import capture_logs
    except ImportError:
        yield Logs(caplog, [])
        return
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as events:
            yield Logs(caplog, events)
    finally:
        structlog.configure(**saved)
