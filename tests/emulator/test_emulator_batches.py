"""The Batch API: create, get, list, cancel; validation; the lifecycle with real output and error files."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from emulator_helpers import CHAT, TERMINAL, Client, assert_error, jsonl, read_jsonl

from airflow_provider_batches.emulator import EmulatorSettings

BATCH_FIELDS = {
    "id", "object", "endpoint", "errors", "input_file_id", "completion_window", "status",
    "output_file_id", "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at",
    "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "request_counts",
    "metadata", "max_concurrency",
}  # fmt: skip
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def test_create_answers_a_full_batch_object(api: Client) -> None:
    f = api.upload(jsonl(2))
    b = api.create(f["id"], metadata={"airflow_idempotency_key": "k-1"}, max_concurrency=4)
    assert set(b) == BATCH_FIELDS
    assert b["id"].startswith("batch_")
    assert (b["object"], b["endpoint"], b["input_file_id"], b["completion_window"]) == (
        "batch",
        CHAT,
        f["id"],
        "24h",
    )
    assert b["status"] == "validating"
    assert isinstance(b["created_at"], int)
    assert b["expires_at"] == b["created_at"] + 86400
    assert all(b[name] is None for name in (*TIMESTAMPS, "errors", "output_file_id", "error_file_id"))
    assert b["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert (b["metadata"], b["max_concurrency"]) == ({"airflow_idempotency_key": "k-1"}, 4)
    assert api.batch(b["id"])["id"] == b["id"]

    plain = api.create(f["id"])
    assert plain["max_concurrency"] == EmulatorSettings().default_line_concurrency
    assert plain["metadata"] is None
    assert api.batch(plain["id"])["max_concurrency"] == plain["max_concurrency"]

    ceiling = EmulatorSettings().max_line_concurrency
    assert api.create(f["id"], max_concurrency=ceiling)["max_concurrency"] == ceiling
    # The user's metadata keys are not capped (the hook adds one of its own): the SDK sets no limit.
    many = {f"k{i}": "v" * 600 for i in range(20)}
    assert api.create(f["id"], metadata={"x" * 100: "y", **many})["metadata"]["x" * 100] == "y"


def test_full_lifecycle_with_request_counts_moving(api: Client, other_key: Client) -> None:
    total, failing = 200, {5, 77, 150}
    b = api.submit(jsonl(total, fail=failing))
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["status"] not in TERMINAL:
        seen.append(api.batch(b["id"]))
        time.sleep(0.01)
    final = seen[-1]

    statuses = [s["status"] for s in seen]
    assert statuses[0] == "validating" and final["status"] == "completed"
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert sorted(set(statuses), key=order.index) == order
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    progress = [s["request_counts"]["completed"] + s["request_counts"]["failed"] for s in seen]
    assert progress == sorted(progress)
    assert any(0 < p < total for p in progress), "request_counts never showed partial progress"
    assert all(s["request_counts"]["total"] == total for s in seen if s["status"] != "validating")

    assert final["request_counts"] == {
        "total": total,
        "completed": total - len(failing),
        "failed": len(failing),
    }
    assert final["created_at"] <= final["in_progress_at"] <= final["finalizing_at"] <= final["completed_at"]
    assert final["failed_at"] is None and final["errors"] is None

    out = read_jsonl(api.content(final["output_file_id"]))
    errors = read_jsonl(api.content(final["error_file_id"]))
    assert sorted(r["custom_id"] for r in out) == sorted(f"req-{i}" for i in range(total) if i not in failing)
    assert sorted(r["custom_id"] for r in errors) == sorted(f"req-{i}" for i in failing)
    for r in out:
        assert set(r) == {"id", "custom_id", "response", "error"}
        assert r["id"].startswith("batch_req_") and r["error"] is None
        assert r["response"]["status_code"] == 200 and r["response"]["request_id"]
        assert r["response"]["body"]["object"] == "chat.completion"
    for r in errors:
        assert r["response"] is None
        assert r["error"]["code"] == "emulator_fail" and r["error"]["message"]

    for file_id in (final["output_file_id"], final["error_file_id"]):
        meta = api.get(f"/files/{file_id}").json()
        assert meta["purpose"] == "batch"
        assert api.get(f"/files/{file_id}/content").headers["Content-Type"] == "application/jsonl"
        assert_error(other_key.get(f"/files/{file_id}"), 404)


def test_no_error_file_when_nothing_fails(api: Client) -> None:
    b = api.wait(api.submit(jsonl(3))["id"])
    assert b["status"] == "completed" and b["error_file_id"] is None
    assert len(read_jsonl(api.content(b["output_file_id"]))) == 3


def test_emulator_fail_with_a_chosen_code_and_message(api: Client) -> None:
    line = {
        "custom_id": "only",
        "method": "POST",
        "url": CHAT,
        "body": {"model": "m", "emulator_fail": {"code": "content_filter", "message": "blocked"}},
    }
    b = api.wait(api.submit(json.dumps(line).encode())["id"])
    assert b["status"] == "completed"
    assert b["output_file_id"] is None
    assert b["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
    [err] = read_jsonl(api.content(b["error_file_id"]))
    assert err["custom_id"] == "only" and err["response"] is None
    assert err["error"] == {"code": "content_filter", "message": "blocked"}


def _answers(api: Client, batch_id: str) -> dict[str, dict[str, Any]]:
    b = api.wait(batch_id)
    assert b["status"] == "completed", b
    return {r["custom_id"]: r["response"]["body"] for r in read_jsonl(api.content(b["output_file_id"]))}


def test_answers_per_endpoint_are_deterministic(api: Client) -> None:
    lines = [
        {"custom_id": c, "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": text}}
        for c, text in (("a", "same text"), ("b", "same text"), ("c", "other text"))
    ]
    ids = [  # all at once: they run side by side
        api.submit(jsonl(2))["id"],
        api.submit(jsonl(2))["id"],
        api.submit("\n".join(json.dumps(x) for x in lines).encode(), "/v1/embeddings")["id"],
        api.submit(jsonl(1, "/v1/images/generations"), "/v1/images/generations")["id"],
        api.submit(jsonl(1, "/v1/responses"), "/v1/responses")["id"],
    ]
    chat, again, emb, images, responses = (_answers(api, i) for i in ids)

    assert chat["req-0"]["object"] == "chat.completion"
    assert chat["req-0"]["choices"][0]["message"]["role"] == "assistant"
    assert (
        chat["req-0"]["choices"][0]["message"]["content"] != chat["req-1"]["choices"][0]["message"]["content"]
    )
    assert (
        again["req-0"]["choices"] == chat["req-0"]["choices"] and again["req-0"]["id"] == chat["req-0"]["id"]
    )

    vectors = {c: body["data"][0]["embedding"] for c, body in emb.items()}
    assert emb["a"]["object"] == "list" and emb["a"]["data"][0]["object"] == "embedding"
    assert len(vectors["a"]) == 8 and all(isinstance(v, float) for v in vectors["a"])
    assert vectors["a"] == vectors["b"] != vectors["c"]

    assert images["req-0"]["data"][0]["url"].startswith("https://")

    assert responses["req-0"]["object"] == "response" and responses["req-0"]["status"] == "completed"
    assert responses["req-0"]["output"][0]["content"][0]["type"] == "output_text"


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"endpoint": CHAT, "completion_window": "24h"}, "input_file_id"),
        ({"input_file_id": 7, "endpoint": CHAT, "completion_window": "24h"}, "input_file_id"),
        ({"endpoint": "/v1/completions", "completion_window": "24h"}, "endpoint"),
        ({"completion_window": "24h"}, "endpoint"),
        ({"endpoint": CHAT, "completion_window": "48h"}, "completion_window"),
        ({"endpoint": CHAT}, "completion_window"),
        ({"endpoint": CHAT, "completion_window": "24h", "metadata": ["a"]}, "metadata"),
        ({"endpoint": CHAT, "completion_window": "24h", "metadata": {"a": 1}}, "metadata"),
        ({"endpoint": CHAT, "completion_window": "24h", "max_concurrency": 0}, "max_concurrency"),
        ({"endpoint": CHAT, "completion_window": "24h", "max_concurrency": -2}, "max_concurrency"),
        ({"endpoint": CHAT, "completion_window": "24h", "max_concurrency": "5"}, "max_concurrency"),
        ({"endpoint": CHAT, "completion_window": "24h", "max_concurrency": 1.5}, "max_concurrency"),
        ({"endpoint": CHAT, "completion_window": "24h", "max_concurrency": True}, "max_concurrency"),
        ({"endpoint": CHAT, "completion_window": "24h", "max_concurrency": 65}, "max_concurrency"),
    ],
)
def test_create_validation(api: Client, payload: dict[str, Any], param: str) -> None:
    f = api.upload(jsonl(1))
    body = {"input_file_id": f["id"], **payload} if param != "input_file_id" else payload
    assert_error(api.post("/batches", json=body), 400, param)


def test_create_needs_an_own_batch_purpose_file(api: Client, other_key: Client, other_user: Client) -> None:
    def create(client: Client, file_id: str) -> Any:
        return client.post(
            "/batches", json={"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
        )

    assert_error(create(api, "file-doesnotexist"), 400, "input_file_id")
    mine = api.upload(jsonl(1))
    assert_error(create(other_key, mine["id"]), 400, "input_file_id")
    assert_error(create(other_user, mine["id"]), 400, "input_file_id")
    not_batch = api.upload(jsonl(1), purpose="user_data")
    assert_error(create(api, not_batch["id"]), 400, "input_file_id")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"", b"null"])
def test_create_with_a_malformed_body_is_400(api: Client, body: bytes) -> None:
    assert_error(api.post("/batches", data=body, headers={"Content-Type": "application/json"}), 400)


def _line(custom_id: Any = "a", method: str = "POST", url: str = CHAT, body: Any = None) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": method,
            "url": url,
            "body": {"model": "m"} if body is None else body,
        }
    )


@pytest.mark.parametrize(
    ("lines", "code", "line"),
    [
        ([_line("a"), "{not json", _line("c")], "invalid_json_line", 2),
        ([_line("a"), "[1, 2]"], "invalid_json_line", 2),
        (
            [_line("a"), _line("b"), json.dumps({"method": "POST", "url": CHAT, "body": {}})],
            "missing_custom_id",
            3,
        ),
        ([_line("a"), _line("a")], "duplicate_custom_id", 2),
        ([_line("a", method="GET")], "invalid_method", 1),
        ([_line("a"), _line("b", url="/v1/embeddings")], "mismatched_url", 2),
        ([_line("a", body="text")], "invalid_body", 1),
        (["", "  "], "empty_file", None),
    ],
)
def test_invalid_input_fails_the_batch_naming_the_line(
    api: Client, lines: list[str], code: str, line: int | None
) -> None:
    b = api.wait(api.submit(("\n".join(lines) + "\n").encode())["id"])
    assert b["status"] == "failed"
    assert isinstance(b["failed_at"], int) and b["failed_at"] >= b["created_at"]
    assert b["in_progress_at"] is None and b["output_file_id"] is None and b["error_file_id"] is None
    assert b["errors"]["object"] == "list"
    [error] = b["errors"]["data"]
    assert (error["code"], error["line"]) == (code, line)
    assert isinstance(error["message"], str) and error["message"]
    assert "param" in error


def test_blank_lines_are_skipped_but_counted_for_line_numbers(api: Client) -> None:
    b = api.wait(api.submit(f"{_line('a')}\n\n{_line('b')}\n\n{_line('a')}\n".encode())["id"])
    assert b["status"] == "failed"
    assert [(e["code"], e["line"]) for e in b["errors"]["data"]] == [("duplicate_custom_id", 5)]


def test_list_pages_newest_first(emu) -> None:
    owner = Client(emu, on_behalf_of="batch-lister")
    f = owner.upload(jsonl(1))
    ids = [owner.create(f["id"])["id"] for _ in range(5)]
    first = owner.get("/batches", params={"limit": 2}).json()
    assert first["object"] == "list"
    assert [b["id"] for b in first["data"]] == ids[:-3:-1]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[-1], ids[-2], True)
    seen, after = [], None
    while True:
        page = owner.get("/batches", params={"limit": 2, **({"after": after} if after else {})}).json()
        seen += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]
    assert len(owner.get("/batches").json()["data"]) == 5  # default limit 20


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"after": "batch_nope"}, "after"),
    ],
)
def test_list_validation(api: Client, params: dict[str, Any], param: str) -> None:
    assert_error(api.get("/batches", params=params), 400, param)


def test_other_owners_get_404_and_never_see_the_batch(
    api: Client, other_key: Client, other_user: Client
) -> None:
    b = api.submit(jsonl(1))
    for stranger in (other_key, other_user):
        assert_error(stranger.get(f"/batches/{b['id']}"), 404)
        assert_error(stranger.post(f"/batches/{b['id']}/cancel"), 404)
        assert b["id"] not in {
            x["id"] for x in stranger.get("/batches", params={"limit": 100}).json()["data"]
        }
    assert api.batch(b["id"])["id"] == b["id"]
    assert_error(api.get("/batches/batch_doesnotexist"), 404)


def test_cancel_keeps_the_partial_output(api: Client) -> None:
    total = 2000  # 10 s at 200 lines/s: cancelled well before the end
    b = api.submit(jsonl(total, fail={3}))
    running = api.wait(b["id"], {"in_progress"})
    while api.batch(b["id"])["request_counts"]["completed"] < 20:
        time.sleep(0.02)
    r = api.post(f"/batches/{b['id']}/cancel")
    assert r.status_code == 200
    cancelling = r.json()
    assert cancelling["status"] == "cancelling" and isinstance(cancelling["cancelling_at"], int)
    assert cancelling["in_progress_at"] == running["in_progress_at"]
    again = api.post(f"/batches/{b['id']}/cancel")
    assert again.status_code == 200 and again.json()["cancelling_at"] == cancelling["cancelling_at"]

    done = api.wait(b["id"])
    assert done["status"] == "cancelled"
    assert done["cancelled_at"] >= done["cancelling_at"] and done["completed_at"] is None
    counts = done["request_counts"]
    assert counts["total"] == total and 20 <= counts["completed"] + counts["failed"] < total
    assert counts == cancelling["request_counts"]
    out = read_jsonl(api.content(done["output_file_id"]))
    assert len(out) == counts["completed"]
    assert [r["custom_id"] for r in read_jsonl(api.content(done["error_file_id"]))] == ["req-3"]

    assert_error(api.post(f"/batches/{b['id']}/cancel"), 400)


def test_cancel_while_validating(api: Client) -> None:
    b = api.submit(jsonl(5))
    cancelling = api.post(f"/batches/{b['id']}/cancel").json()
    assert cancelling["status"] == "cancelling"
    done = api.wait(b["id"])
    assert done["status"] == "cancelled" and done["in_progress_at"] is None
    assert done["output_file_id"] is None and done["request_counts"]["completed"] == 0


def test_cancel_a_completed_batch_is_400(api: Client) -> None:
    b = api.wait(api.submit(jsonl(1))["id"])
    assert b["status"] == "completed"
    assert_error(api.post(f"/batches/{b['id']}/cancel"), 400)
    assert api.batch(b["id"])["status"] == "completed"


def test_deleting_the_input_does_not_disturb_a_running_batch(api: Client) -> None:
    f = api.upload(jsonl(50))
    b = api.create(f["id"])
    assert api.delete(f"/files/{f['id']}").status_code == 200
    done = api.wait(b["id"])
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 50


def test_inputs_over_a_mib_are_handled_in_a_thread_just_the_same() -> None:
    from airflow_provider_batches.emulator import run_emulator
    from airflow_provider_batches.emulator.lifecycle import INLINE_BYTES

    pad = "p" * 600
    lines = [
        _line(f"big-{i}", body={"model": "m", "pad": pad, "emulator_fail": i % 1000 == 0})
        for i in range(3000)
    ]
    good = ("\n".join(lines) + "\n").encode()
    assert len(good) > INLINE_BYTES
    timings = {"validation_seconds": 0.1, "lines_per_second": 100000.0, "finalizing_seconds": 0.1}
    with run_emulator(api_keys=("big-key",), **timings) as emu:
        api = Client(emu, "big-key")
        ok, bad = api.submit(good), api.submit(good + b"{broken\n")
        done = api.wait(ok["id"])
        assert done["request_counts"] == {"total": 3000, "completed": 2997, "failed": 3}
        assert len(read_jsonl(api.content(done["output_file_id"]))) == 2997
        failed = api.wait(bad["id"])
        assert failed["status"] == "failed"
        assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [("invalid_json_line", 3001)]
