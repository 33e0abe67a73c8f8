"""Hostile input never reaches the server; the API key never reaches a log, an error or another host."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_provider_batches.exceptions import MKA1APIError, MKA1AuthenticationError, MKA1InvalidInputError
from airflow_provider_batches.hooks.mka1 import MKA1Hook, close_async_sessions
from airflow_provider_batches.retry import RetryPolicy
from tests.conftest import API_KEY, HOSTILE_HEADER_VALUES, HOSTILE_IDS, connection_json
from tests.hooks.conftest import API

STR_IDS = [v for v in HOSTILE_IDS if isinstance(v, str)]


def _calls(hook: MKA1Hook, bad: str, tmp_path: Path) -> list:
    return [
        lambda: hook.get_batch(bad),
        lambda: hook.cancel_batch(bad),
        lambda: hook.get_file(bad),
        lambda: hook.delete_file(bad),
        lambda: hook.download_file(bad, tmp_path / "x"),
        lambda: list(hook.iter_results(bad)),
        lambda: hook.create_batch(bad, "/v1/embeddings"),
        lambda: asyncio.run(hook.aget_batch(bad)),
        lambda: asyncio.run(hook.acancel_batch(bad)),
    ]


@pytest.mark.parametrize("bad", STR_IDS, ids=range(len(STR_IDS)))
def test_hostile_ids_send_nothing(hook: MKA1Hook, emulator, tmp_path: Path, bad: str) -> None:
    emulator.reset_calls()
    for call in _calls(hook, bad, tmp_path):
        with pytest.raises(MKA1InvalidInputError, match=r"Invalid (batch|file|input file) id"):
            call()
    assert emulator.calls() == 0
    assert list(tmp_path.iterdir()) == []


STR_HEADERS = [v for v in HOSTILE_HEADER_VALUES if isinstance(v, str) and v]


@pytest.mark.parametrize("bad", STR_HEADERS, ids=range(len(STR_HEADERS)))
def test_hostile_on_behalf_of_sends_nothing(mka1_conn: str, emulator, monkeypatch, bad: str) -> None:
    emulator.reset_calls()
    with pytest.raises(MKA1InvalidInputError, match="on_behalf_of"):
        MKA1Hook(mka1_conn, on_behalf_of=bad)
    # The same value in the connection is refused at the first call, still before any request.
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_HOSTILE", connection_json(emulator.base_url, on_behalf_of=bad))
    with pytest.raises(MKA1InvalidInputError, match=r"MKA1 connection 'mka1_hostile': .*on_behalf_of"):
        MKA1Hook("mka1_hostile").get_batch("batch_1")
    with pytest.raises(MKA1InvalidInputError):
        asyncio.run(MKA1Hook("mka1_hostile").aget_batch("batch_1"))
    assert emulator.calls() == 0


def test_hostile_upload_arguments_send_nothing(
    hook: MKA1Hook, emulator, input_file: Path, tmp_path: Path
) -> None:
    emulator.reset_calls()
    for kwargs in (
        {"filename": "a\r\nb.jsonl"},
        {"filename": "  "},
        {"filename": "x" * 300},
        {"filename": "blob"},
        {"purpose": "batch\n"},
    ):
        with pytest.raises(MKA1InvalidInputError):
            hook.upload_file(input_file, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(MKA1InvalidInputError, match="No file to upload"):
        hook.upload_file(tmp_path / "missing.jsonl")
    with pytest.raises(MKA1InvalidInputError, match=r"Cannot use .nope:///?bucket/x.jsonl.: .*nope"):
        hook.upload_file("nope://bucket/x.jsonl")
    with pytest.raises(MKA1InvalidInputError, match=r"Cannot use .nope:///?bucket/x.jsonl.: .*nope"):
        hook.download_file("file-abc", "nope://bucket/x.jsonl")
    unreadable = tmp_path / "locked.jsonl"
    unreadable.write_text("{}\n")
    unreadable.chmod(0)
    if not os.access(unreadable, os.R_OK):  # root reads anything
        with pytest.raises(MKA1InvalidInputError, match="Cannot read"):
            hook.upload_file(unreadable)
    assert emulator.calls() == 0


def test_key_never_in_logs_errors_or_reprs(
    make_hook, uploaded, emulator, hook_logs, monkeypatch, tmp_path
) -> None:
    hook = make_hook(retry_policy=RetryPolicy(max_retries=1, backoff_base=0.01))
    errors: list[BaseException] = []
    # A proxy that echoes the Authorization header back in its error page.
    emulator.add_fault(
        method="GET",
        path=f"{API}/batches/*",
        kind="status",
        status=401,
        count=1,
        body=f"<html><body>Bad header: Bearer {API_KEY}</body></html>",
        content_type="text/html",
    )
    with pytest.raises(MKA1AuthenticationError) as info:
        hook.get_batch("batch_1")
    errors.append(info.value)
    assert "Bearer ***" in str(info.value)
    emulator.add_fault(
        method="GET", path=f"{API}/batches", kind="status", status=503, count=2, body={"error": API_KEY}
    )
    ok, message = hook.test_connection()
    assert not ok
    batch = hook.create_batch(uploaded.id, "/v1/chat/completions", idempotency_key="af-k")
    hook.download_file(uploaded.id, tmp_path / "copy.jsonl")
    asyncio.run(_async_calls(hook, batch.id))
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_WRONG", connection_json(emulator.base_url, api_key=API_KEY + "x"))
    with pytest.raises(MKA1AuthenticationError) as wrong:
        MKA1Hook("mka1_wrong").get_batch(batch.id)
    errors.append(wrong.value)

    texts = [message, repr(hook), repr(hook.settings), str(hook.settings), *hook_logs.messages]
    texts += [t for e in errors for t in (str(e), repr(e), repr(e.args))]
    assert any(m.startswith("MKA1 GET /batches/") for m in hook_logs.messages)  # debug lines were captured
    assert any(m.startswith("Created batch") for m in hook_logs.messages)
    for text in texts:
        assert API_KEY not in text


async def _async_calls(hook: MKA1Hook, batch_id: str) -> None:
    try:
        await hook.aget_batch(batch_id)
        await hook.acancel_batch(batch_id)
    finally:
        await close_async_sessions()


def test_debug_line_per_call(hook: MKA1Hook, hook_logs, emulator) -> None:
    hook.test_connection()
    lines = [m for m in hook_logs.messages if m.startswith("MKA1 GET /batches")]
    assert len(lines) == 1
    assert lines[0].startswith("MKA1 GET /batches -> 200 (request id ") and lines[0].endswith(" ms)")


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]]
    location = ""

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        if self.location:
            self.send_response(302)
            self.send_header("Location", self.location)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def _serve(location: str = "") -> Iterator[tuple[str, list[dict[str, str]]]]:
    handler = type("Handler", (_Recorder,), {"seen": [], "location": location})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[dict[str, str]]]]:
    yield from _serve()


def test_redirects_are_not_followed(elsewhere, monkeypatch) -> None:
    other_url, other_seen = elsewhere
    for base_url, seen in _serve(location=f"{other_url}/steal"):
        monkeypatch.setenv("AIRFLOW_CONN_MKA1_REDIRECT", connection_json(base_url))
        hook = MKA1Hook("mka1_redirect", retry_policy=RetryPolicy(max_retries=0))
        with pytest.raises(MKA1APIError) as info:
            hook.get_batch("batch_1")
        assert info.value.status_code == 302
        assert "redirect to http://127.0.0.1:" in str(info.value) and "not followed" in str(info.value)
        with pytest.raises(MKA1APIError):
            asyncio.run(_aget(hook))
        assert seen[0]["Authorization"] == f"Bearer {API_KEY}"
        assert len(seen) == 2
    assert other_seen == []


async def _aget(hook: MKA1Hook) -> None:
    try:
        await hook.aget_batch("batch_1")
    finally:
        await close_async_sessions()


def test_plain_http_to_another_host_warns(monkeypatch, hook_logs) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_PLAIN", connection_json("http://gw.example.com"))
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_LOCAL", connection_json("http://127.0.0.1:9"))
    MKA1Hook("mka1_local").settings  # noqa: B018
    assert not any("plain http" in m for m in hook_logs.messages)
    MKA1Hook("mka1_plain").settings  # noqa: B018
    assert any(
        "sends the API key over plain http:// to http://gw.example.com" in m for m in hook_logs.messages
    )
