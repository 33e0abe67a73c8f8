"""The retry rule, error answers and reattach, proven with the emulator's faults and call counter."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from airflow_provider_batches.exceptions import (
    MKA1AuthenticationError,
    MKA1BadRequestError,
    MKA1ConnectionError,
    MKA1InvalidResponseError,
    MKA1NotFoundError,
    MKA1RateLimitError,
    MKA1ServerError,
)
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import Batch, BatchStatus, FileObject
from airflow_provider_batches.retry import RetryPolicy
from tests.conftest import connection_json
from tests.hooks.conftest import API, wait_terminal

BATCH_PATH = f"{API}/batches/*"
CREATE = f"{API}/batches"
REQUEST_ID = re.compile(r"\(request id [0-9a-f-]{36}#\d+\)$")


@pytest.fixture
def batch(hook: MKA1Hook, uploaded: FileObject, emulator) -> Batch:
    created = hook.create_batch(uploaded.id, "/v1/chat/completions")
    emulator.reset_calls()
    return created


def test_503_twice_then_success_is_three_calls(hook: MKA1Hook, batch: Batch, emulator) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=503, count=2)
    assert hook.get_batch(batch.id).id == batch.id
    assert emulator.calls("GET", BATCH_PATH) == 3


@pytest.mark.parametrize("status", [408, 500, 502, 504])
def test_each_retried_status(hook: MKA1Hook, batch: Batch, emulator, status: int) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=status, count=1)
    assert hook.get_batch(batch.id).id == batch.id
    assert emulator.calls("GET", BATCH_PATH) == 2


def test_retries_run_out(make_hook, batch: Batch, emulator) -> None:
    hook = make_hook(retry_policy=RetryPolicy(max_retries=2, backoff_base=0.01))
    emulator.add_fault(
        method="GET",
        path=BATCH_PATH,
        kind="status",
        status=500,
        count=5,
        body="<html><head><title>Internal oops</title></head><body>trace</body></html>",
        content_type="text/html",
    )
    with pytest.raises(MKA1ServerError) as info:
        hook.get_batch(batch.id)
    assert emulator.calls("GET", BATCH_PATH) == 3
    assert str(info.value).startswith(
        f"MKA1 API GET /batches/{batch.id} answered 500 Internal Server Error: Internal oops"
    )
    assert REQUEST_ID.search(str(info.value))


def test_502_html_message(make_hook, batch: Batch, emulator) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=502, count=1)
    with pytest.raises(MKA1ServerError) as info:
        make_hook(retry_policy=RetryPolicy(max_retries=0)).get_batch(batch.id)
    assert ": 502 Bad Gateway (request id" in str(info.value)


def test_429_retry_after_is_waited(hook: MKA1Hook, batch: Batch, emulator) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=429, count=1, retry_after=1)
    started = time.monotonic()
    hook.get_batch(batch.id)
    assert time.monotonic() - started >= 1.0
    assert emulator.calls("GET", BATCH_PATH) == 2


def test_retry_after_ms_is_waited(hook: MKA1Hook, batch: Batch, emulator) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=503, count=1, retry_after_ms=400)
    started = time.monotonic()
    hook.get_batch(batch.id)
    assert time.monotonic() - started >= 0.4
    assert emulator.calls("GET", BATCH_PATH) == 2


def test_rate_limit_exhausted(make_hook, batch: Batch, emulator) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=429, count=3)
    with pytest.raises(MKA1RateLimitError) as info:
        make_hook(retry_policy=RetryPolicy(max_retries=2, backoff_base=0.01)).get_batch(batch.id)
    assert "answered 429 Too Many Requests: Rate limit exceeded (request id" in str(info.value)
    assert emulator.calls("GET", BATCH_PATH) == 3


def test_stall_past_read_timeout_is_retried(make_hook, batch: Batch, emulator) -> None:
    hook = make_hook(timeout=0.5)
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="stall", seconds=1.5, count=1)
    started = time.monotonic()
    assert hook.get_batch(batch.id).id == batch.id
    assert 0.5 <= time.monotonic() - started < 1.5
    assert emulator.calls("GET", BATCH_PATH) == 2


def test_stall_every_time_is_a_connection_error(make_hook, batch: Batch, emulator) -> None:
    hook = make_hook(timeout=0.3, retry_policy=RetryPolicy(max_retries=1, backoff_base=0.01))
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="stall", seconds=1.0, count=2)
    where = emulator.base_url.removeprefix("http://")
    said = f"MKA1 API GET /batches/{batch.id}: no answer from {where} within 0.3 s (the read timeout)"
    with pytest.raises(MKA1ConnectionError, match=re.escape(said)):
        hook.get_batch(batch.id)
    assert emulator.calls("GET", BATCH_PATH) == 2


@pytest.mark.parametrize("kind", ["drop", "truncate"])
def test_dropped_or_truncated_answer_is_retried(hook: MKA1Hook, batch: Batch, emulator, kind: str) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind=kind, count=1)
    assert hook.get_batch(batch.id).id == batch.id
    assert emulator.calls("GET", BATCH_PATH) == 2


def test_connection_refused(emulator, monkeypatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DOWN", connection_json(f"http://127.0.0.1:{port}"))
    hook = MKA1Hook("mka1_down", retry_policy=RetryPolicy(max_retries=2, backoff_base=0.01))
    said = f"MKA1 API GET /batches/batch_1: could not connect to 127.0.0.1:{port}: connection refused"
    with pytest.raises(MKA1ConnectionError) as raised:
        hook.get_batch("batch_1")
    assert str(raised.value) == said
    ok, message = hook.test_connection()
    assert (ok, message) == (
        False,
        f"MKA1 API GET /batches: could not connect to 127.0.0.1:{port}: connection refused",
    )


async def test_connection_refused_async_says_the_same(emulator, monkeypatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DOWN", connection_json(f"http://127.0.0.1:{port}"))
    async with MKA1Hook("mka1_down", retry_policy=RetryPolicy(max_retries=1, backoff_base=0.01)) as hook:
        with pytest.raises(MKA1ConnectionError) as raised:
            await hook.aget_batch("batch_1")
    assert str(raised.value) == (
        f"MKA1 API GET /batches/batch_1: could not connect to 127.0.0.1:{port}: connection refused"
    )


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, MKA1BadRequestError),
        (401, MKA1AuthenticationError),
        (403, MKA1AuthenticationError),
        (404, MKA1NotFoundError),
        (409, MKA1BadRequestError),
        (422, MKA1BadRequestError),
    ],
)
def test_statuses_not_retried(hook: MKA1Hook, batch: Batch, emulator, status: int, cls: type) -> None:
    emulator.add_fault(
        method="GET",
        path=BATCH_PATH,
        kind="status",
        status=status,
        count=3,
        body={"error": {"message": f"server says {status}", "type": "invalid_request_error", "code": None}},
    )
    with pytest.raises(cls) as info:
        hook.get_batch(batch.id)
    assert emulator.calls("GET", BATCH_PATH) == 1
    error = info.value
    assert error.status_code == status and error.request_id
    text = str(error)
    assert f"answered {status} " in text and f"server says {status}" in text and error.request_id in text
    assert REQUEST_ID.search(text)


def test_invalid_body_is_an_invalid_response(hook: MKA1Hook, batch: Batch, emulator) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=200, body={"id": 5}, count=1)
    with pytest.raises(MKA1InvalidResponseError, match="the body is not a valid Batch"):
        hook.get_batch(batch.id)
    emulator.add_fault(
        method="GET", path=BATCH_PATH, kind="status", status=200, body="<html>proxy</html>", count=1
    )
    with pytest.raises(MKA1InvalidResponseError, match="the body is not JSON"):
        hook.get_batch(batch.id)
    assert emulator.calls("GET", BATCH_PATH) == 2


# -- create_batch: never a second batch ------------------------------------------------------------


def _with_key(hook: MKA1Hook, key: str) -> list[Batch]:
    return [b for b in hook.list_batches() if (b.metadata or {}).get("airflow_idempotency_key") == key]


def test_reattach_after_502_on_create(hook: MKA1Hook, uploaded: FileObject, emulator) -> None:
    emulator.reset_calls()
    emulator.add_fault(method="POST", path=CREATE, kind="status", status=502, count=1)
    batch = hook.create_batch(uploaded.id, "/v1/chat/completions", idempotency_key="af-502")
    assert [b.id for b in _with_key(hook, "af-502")] == [batch.id]
    # One 502, then one POST that created it: never two batches.
    assert emulator.calls("POST", CREATE) == 2


def test_reattach_when_the_failed_create_did_create(hook: MKA1Hook, uploaded: FileObject, emulator) -> None:
    emulator.reset_calls()
    # "drop": the server creates the batch, then the connection dies before the answer.
    emulator.add_fault(method="POST", path=CREATE, kind="drop", count=1)
    batch = hook.create_batch(uploaded.id, "/v1/chat/completions", idempotency_key="af-drop")
    assert [b.id for b in _with_key(hook, "af-drop")] == [batch.id]
    assert emulator.calls("POST", CREATE) == 1


def test_task_retry_reattaches_without_a_post(
    hook: MKA1Hook, make_hook, uploaded: FileObject, emulator
) -> None:
    first = hook.create_batch(uploaded.id, "/v1/chat/completions", idempotency_key="af-retry")
    emulator.reset_calls()
    again = make_hook().create_batch(uploaded.id, "/v1/chat/completions", idempotency_key="af-retry")
    assert again.id == first.id
    assert emulator.calls("POST") == 0


def test_no_reattach_to_another_input_or_a_dead_batch(
    hook: MKA1Hook, uploaded: FileObject, input_file: Path
) -> None:
    first = hook.create_batch(uploaded.id, "/v1/chat/completions", idempotency_key="af-k")
    other_input = hook.upload_file(input_file)
    second = hook.create_batch(other_input.id, "/v1/chat/completions", idempotency_key="af-k")
    assert second.id != first.id
    hook.cancel_batch(second.id)
    assert wait_terminal(hook, second.id).status == BatchStatus.CANCELLED
    third = hook.create_batch(other_input.id, "/v1/chat/completions", idempotency_key="af-k")
    assert third.id not in (first.id, second.id)
    assert hook.find_batch("af-k") == hook.get_batch(third.id)
    assert hook.find_batch("af-unknown") is None


def test_ambiguous_create_without_key_is_not_retried(hook: MKA1Hook, uploaded: FileObject, emulator) -> None:
    emulator.reset_calls()
    emulator.add_fault(method="POST", path=CREATE, kind="status", status=503, count=1)
    with pytest.raises(MKA1ServerError):
        hook.create_batch(uploaded.id, "/v1/chat/completions")
    assert emulator.calls("POST", CREATE) == 1


def test_create_after_429_is_retried_without_looking(hook: MKA1Hook, uploaded: FileObject, emulator) -> None:
    emulator.reset_calls()
    emulator.add_fault(method="POST", path=CREATE, kind="status", status=429, count=1)
    hook.create_batch(uploaded.id, "/v1/chat/completions")
    assert emulator.calls("POST", CREATE) == 2
    assert emulator.calls("GET", CREATE) == 0


def test_create_400_is_not_retried(hook: MKA1Hook, uploaded: FileObject, emulator) -> None:
    emulator.reset_calls()
    with pytest.raises(MKA1BadRequestError, match="endpoint"):
        hook.create_batch(uploaded.id, "/v1/unknown", idempotency_key="af-400")
    assert emulator.calls("POST", CREATE) == 1


# -- downloads -------------------------------------------------------------------------------------

CONTENT = f"{API}/files/*/content"


def test_download_is_atomic_under_a_drop(make_hook, uploaded: FileObject, tmp_path: Path, emulator) -> None:
    destination = tmp_path / "dl" / "out.jsonl"
    emulator.add_fault(method="GET", path=CONTENT, kind="drop", count=1)
    with pytest.raises(MKA1ConnectionError):
        make_hook(retry_policy=RetryPolicy(max_retries=0)).download_file(uploaded.id, destination)
    assert list((tmp_path / "dl").iterdir()) == []  # neither the file nor a temporary one
    result = make_hook().download_file(uploaded.id, destination)
    assert (result.bytes, destination.stat().st_size) == (uploaded.bytes, uploaded.bytes)
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["out.jsonl"]


def test_download_resumes_after_a_truncated_body(
    hook: MKA1Hook, uploaded: FileObject, input_file: Path, tmp_path: Path, emulator
) -> None:
    emulator.reset_calls()
    emulator.add_fault(method="GET", path=CONTENT, kind="truncate", count=1)
    result = hook.download_file(uploaded.id, tmp_path / "copy.jsonl")
    assert (tmp_path / "copy.jsonl").read_bytes() == input_file.read_bytes()
    assert result.lines == 5
    assert emulator.calls("GET", CONTENT) == 2


def test_iter_results_resumes_where_the_drop_cut(hook: MKA1Hook, finished_batch: Batch, emulator) -> None:
    assert finished_batch.output_file_id
    expected = [r.custom_id for r in hook.iter_results(finished_batch.output_file_id)]
    emulator.reset_calls()
    emulator.add_fault(method="GET", path=CONTENT, kind="truncate", count=1)
    assert [r.custom_id for r in hook.iter_results(finished_batch.output_file_id)] == expected
    assert emulator.calls("GET", CONTENT) == 2


def test_download_to_object_storage_is_atomic(make_hook, uploaded: FileObject, emulator, memory_fs) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    target = ObjectStoragePath("memory://bucket/results/out.jsonl")
    emulator.add_fault(method="GET", path=CONTENT, kind="truncate", count=1)
    with pytest.raises(MKA1ConnectionError):
        make_hook(retry_policy=RetryPolicy(max_retries=0)).download_file(uploaded.id, target)
    assert not target.exists()
    assert [k for k in memory_fs.store if "results" in k] == []


def test_download_size_mismatch_leaves_nothing(
    hook: MKA1Hook, uploaded: FileObject, tmp_path: Path, emulator
) -> None:
    lie = {**uploaded.model_dump(), "bytes": uploaded.bytes + 1}
    emulator.add_fault(
        method="GET", path=f"{API}/files/{uploaded.id}", kind="status", status=200, body=lie, count=1
    )
    with pytest.raises(MKA1InvalidResponseError, match=f"downloaded {uploaded.bytes} bytes"):
        hook.download_file(uploaded.id, tmp_path / "dl" / "x.jsonl")
    assert list((tmp_path / "dl").iterdir()) == []
