"""``emulator_fail`` with ``times``: a line fails its first runs only, per owner; transient codes carry
a 429 or 5xx ``response``; structured output follows the requested JSON schema."""

from __future__ import annotations

import json
from typing import Any

from emulator_helpers import CHAT, Client, read_jsonl


def _line(custom_id: str, fail: Any, content: str = "hello") -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "emulator_fail": fail}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}).encode() + b"\n"


def _run(api: Client, data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    b = api.wait(api.submit(data)["id"])
    assert b["status"] == "completed", b
    out = read_jsonl(api.content(b["output_file_id"])) if b["output_file_id"] else []
    err = read_jsonl(api.content(b["error_file_id"])) if b["error_file_id"] else []
    return b, out, err


def test_a_line_fails_only_its_first_runs_then_is_answered(api: Client, other_user: Client) -> None:
    flaky = {"code": "server_error", "message": "upstream hiccup", "times": 2}
    data = _line("a", flaky) + _line("b", {"code": "content_filter", "message": "no"})

    first, _, err = _run(api, data)
    assert first["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    by_id = {r["custom_id"]: r for r in err}
    assert by_id["a"]["error"] == {"code": "server_error", "message": "upstream hiccup"}
    assert by_id["a"]["response"]["status_code"] == 500
    assert by_id["a"]["response"]["body"]["error"]["code"] == "server_error"
    assert by_id["b"]["response"] is None  # not a transient code: no response, as before

    second, _, _ = _run(api, data)
    assert second["request_counts"]["failed"] == 2
    third, out, err = _run(api, data)
    assert third["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    assert [r["custom_id"] for r in out] == ["a"] and [r["custom_id"] for r in err] == ["b"]

    # Another owner runs the same line for the first time; another body is another line.
    theirs, _, _ = _run(other_user, data)
    assert theirs["request_counts"]["failed"] == 2
    changed, out, _ = _run(api, _line("a", flaky, content="other"))
    assert changed["request_counts"]["failed"] == 1


def test_transient_codes_get_their_status(api: Client) -> None:
    codes = {"rate_limit_exceeded": 429, "server_error": 500, "service_unavailable": 503, "timeout": 504}
    data = b"".join(_line(code, {"code": code, "message": "m"}) for code in codes)
    _, _, err = _run(api, data)
    assert {r["custom_id"]: r["response"]["status_code"] for r in err} == codes


def test_structured_output_follows_the_schema(api: Client) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}, "score": {"type": "integer"}}}
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "rate"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    }
    line = json.dumps({"custom_id": "s", "method": "POST", "url": CHAT, "body": body}).encode()
    _, out, _ = _run(api, line)
    content = json.loads(out[0]["response"]["body"]["choices"][0]["message"]["content"])
    assert set(content) == {"label", "score"} and isinstance(content["score"], int)
