"""The Batches API of the emulator, driven through the vendor SDK: create, get, list pages, cancel, errors."""

from __future__ import annotations

import json

import httpx
import pytest
from meetkai_mka1 import SDK, models
from sdk_helpers import CHAT, ENDPOINTS, content, end_user, jsonl, new_sdk, ok, refused, upload, wait

from airflow_provider_batches.emulator import EmulatorSettings, run_emulator
from tests.conftest import API_KEY

DEFAULTS = EmulatorSettings()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"metadata": {"team": "eval", "airflow_idempotency_key": "k-1"}},
        {"metadata": None},
        {"max_concurrency": 3},
        {"max_concurrency": DEFAULTS.max_line_concurrency},
        {"metadata": {"k": "v"}, "max_concurrency": 1},
    ],
    ids=["no-options", "metadata", "null-metadata", "max-concurrency", "at-ceiling", "both"],
)
def test_create_with_and_without_each_optional_field(sdk: SDK, obo: str, options: dict) -> None:
    f = upload(sdk, jsonl(2), obo)
    b = ok(sdk.llm.batches.create, input_file_id=f.id, endpoint=CHAT, x_on_behalf_of=obo, **options)
    assert (b.object, b.endpoint, b.input_file_id, b.completion_window, b.status) == (
        "batch",
        CHAT,
        f.id,
        "24h",
        "validating",
    )
    assert b.max_concurrency == options.get("max_concurrency", DEFAULTS.default_line_concurrency)
    assert b.metadata == options.get("metadata")
    assert b.expires_at == b.created_at + 86400
    assert ok(sdk.llm.batches.get, batch_id=b.id, x_on_behalf_of=obo).max_concurrency == b.max_concurrency
    done = wait(sdk, b.id, obo)[-1]
    assert (done.status, done.request_counts.completed, done.max_concurrency) == (
        "completed",
        2,
        b.max_concurrency,
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_endpoint_runs_to_completion_with_readable_results(sdk: SDK, obo: str, endpoint: str) -> None:
    f = upload(sdk, jsonl(40, endpoint, fail={7, 30}), obo)
    b = ok(sdk.llm.batches.create, input_file_id=f.id, endpoint=endpoint, x_on_behalf_of=obo)
    seen = wait(sdk, b.id, obo)
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert [s.status for s in seen] == sorted((s.status for s in seen), key=order.index)
    done = seen[-1]
    assert done.status == "completed" and done.errors is None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        40,
        38,
        2,
    )
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at  # type: ignore[operator]
    for file_id, lines in ((done.output_file_id, 38), (done.error_file_id, 2)):
        assert file_id is not None
        meta = ok(sdk.llm.files.get, file_id=file_id, x_on_behalf_of=obo)
        assert meta.purpose == "batch"  # one of the purposes the SDK lists
        data, media_type = content(sdk, file_id, x_on_behalf_of=obo)
        assert media_type == "application/jsonl" and len(data.splitlines()) == lines
        assert all(json.loads(line)["custom_id"].startswith("r-") for line in data.splitlines())


def test_failed_validation_errors_are_read_by_the_sdk(sdk: SDK, obo: str) -> None:
    bad = b'{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}\nnot json\n'
    f = upload(sdk, bad, obo)
    b = ok(sdk.llm.batches.create, input_file_id=f.id, endpoint=CHAT, x_on_behalf_of=obo)
    failed = wait(sdk, b.id, obo)[-1]
    assert failed.status == "failed" and failed.failed_at is not None
    assert isinstance(failed.errors, models.BatchErrors) and failed.errors.object == "list"
    assert {(e.code, e.line) for e in failed.errors.data} == {("invalid_method", 1), ("invalid_json_line", 2)}


def test_cancel(sdk: SDK, obo: str) -> None:
    f = upload(sdk, jsonl(2000), obo)
    b = ok(sdk.llm.batches.create, input_file_id=f.id, endpoint=CHAT, x_on_behalf_of=obo)
    cancelling = ok(sdk.llm.batches.cancel, batch_id=b.id, x_on_behalf_of=obo)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    again = ok(sdk.llm.batches.cancel, batch_id=b.id, x_on_behalf_of=obo)
    assert again.status in ("cancelling", "cancelled")
    cancelled = wait(sdk, b.id, obo)[-1]
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    refused(sdk.llm.batches.cancel, 400, batch_id=b.id, x_on_behalf_of=obo)


def test_expired_batch_keeps_partial_output() -> None:
    """A batch whose window passes mid-run: on an emulator of its own, whose window is 2 s."""
    with run_emulator(api_keys=(API_KEY,), completion_window_seconds=2.0, lines_per_second=200.0) as emu:
        short = new_sdk(emu.base_url, API_KEY)
        f = upload(short, jsonl(1000), None)
        b = ok(short.llm.batches.create, input_file_id=f.id, endpoint=CHAT)
        expired = wait(short, b.id, None)[-1]
        assert expired.status == "expired" and expired.expired_at is not None
        assert 0 < expired.request_counts.completed < 1000 and expired.output_file_id is not None
        data, _ = content(short, expired.output_file_id)
        assert len(data.splitlines()) == expired.request_counts.completed


def test_list_pages_hold_batches_created_with_and_without_options(sdk: SDK, obo: str) -> None:
    f = upload(sdk, jsonl(1), obo)
    created = [
        ok(sdk.llm.batches.create, input_file_id=f.id, endpoint=CHAT, x_on_behalf_of=obo, **options).id
        for options in ({}, {"max_concurrency": 2}, {"metadata": {"i": "2"}}, {}, {"metadata": None})
    ]
    first = ok(sdk.llm.batches.list, x_on_behalf_of=obo)
    assert [b.id for b in first.data] == created[::-1] and first.has_more is False
    assert (first.first_id, first.last_id) == (created[-1], created[0])
    seen, after = [], None
    while True:
        page = ok(sdk.llm.batches.list, limit=2, after=after, x_on_behalf_of=obo)
        assert len(page.data) <= 2
        seen += [b.id for b in page.data]
        if not page.has_more:
            break
        after = page.last_id
    assert seen == created[::-1]
    empty = ok(sdk.llm.batches.list, x_on_behalf_of=end_user())
    assert (empty.data, empty.has_more) == ([], False)


def test_unknown_ids_another_key_and_another_end_user(sdk: SDK, other_key_sdk: SDK, obo: str) -> None:
    refused(sdk.llm.batches.get, 404, batch_id="batch_doesnotexist", x_on_behalf_of=obo)
    refused(sdk.llm.batches.cancel, 404, batch_id="batch_doesnotexist", x_on_behalf_of=obo)
    f = upload(sdk, jsonl(1), obo)
    b = ok(sdk.llm.batches.create, input_file_id=f.id, endpoint=CHAT, x_on_behalf_of=obo)
    for client, who in ((other_key_sdk, obo), (sdk, end_user()), (sdk, None)):
        refused(client.llm.batches.get, 404, batch_id=b.id, x_on_behalf_of=who)
        refused(client.llm.batches.cancel, 404, batch_id=b.id, x_on_behalf_of=who)
        assert b.id not in {x.id for x in ok(client.llm.batches.list, x_on_behalf_of=who).data}
        refused(client.llm.batches.list, 400, after=b.id, x_on_behalf_of=who)
        refused(client.llm.batches.create, 400, input_file_id=f.id, endpoint=CHAT, x_on_behalf_of=who)
    assert ok(sdk.llm.batches.get, batch_id=b.id, x_on_behalf_of=obo).status != "cancelling"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": -1}, "max_concurrency"),
        ({"max_concurrency": DEFAULTS.max_line_concurrency + 1}, "max_concurrency"),
        ({"input_file_id": "file-doesnotexist"}, "input_file_id"),
        ({"input_file_id": ""}, "input_file_id"),
    ],
)
def test_create_refuses_bad_values(sdk: SDK, obo: str, options: dict, param: str) -> None:
    f = upload(sdk, jsonl(1), obo)
    error = refused(
        sdk.llm.batches.create,
        400,
        **{"input_file_id": f.id, "endpoint": CHAT, "x_on_behalf_of": obo, **options},
    )
    assert json.loads(error.body)["error"]["param"] == param
    assert ok(sdk.llm.batches.list, x_on_behalf_of=obo).data == []


def test_create_refuses_a_file_that_is_not_for_batches(sdk: SDK, obo: str) -> None:
    f = upload(sdk, jsonl(1), obo, purpose="user_data")
    refused(sdk.llm.batches.create, 400, input_file_id=f.id, endpoint=CHAT, x_on_behalf_of=obo)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b"",
        b'{"input_file_id": 7, "endpoint": "/v1/chat/completions", "completion_window": "24h"}',
    ],
    ids=["not-json", "not-an-object", "empty", "wrong-type"],
)
def test_malformed_create_bodies_get_the_apis_error(emulator, body: bytes) -> None:
    """Bodies the SDK cannot send: raw HTTP, the answer read as the SDK reads any 4XX."""
    r = httpx.post(
        f"{emulator.api_url}/batches",
        content=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert isinstance(error["message"], str) and isinstance(error["code"], str)


def test_list_refuses_bad_limits(sdk: SDK, obo: str) -> None:
    for limit in (0, 101):
        refused(sdk.llm.batches.list, 400, limit=limit, x_on_behalf_of=obo)
