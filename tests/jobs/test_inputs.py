"""The job's input: every bad line refused by number before anything is sent; shards within both limits."""

from __future__ import annotations

import json

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_batches.exceptions import MKA1InvalidInputError
from airflow_provider_batches.jobs.index import JobIndex
from airflow_provider_batches.jobs.inputs import iter_request_lines
from airflow_provider_batches.jobs.shards import split_input
from tests.conftest import make_context
from tests.jobs.conftest import ENDPOINT, job, request_line, write_jsonl


def _split(tmp_path, requests, **limits):
    index = JobIndex(tmp_path / "index.sqlite")
    try:
        return split_input(
            requests,
            ENDPOINT,
            index,
            tmp_path / "shards",
            max_requests=limits.get("max_requests", 1000),
            max_bytes=limits.get("max_bytes", 10**9),
            model=limits.get("model"),
        )
    finally:
        index.close()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"Line 3 of .* is not valid JSON"),
        ("[1, 2]", r"Line 3 of .* is a JSON list, not an object"),
        (
            json.dumps({"method": "POST", "url": ENDPOINT, "body": {}}),
            r"Line 3 .* non-empty string 'custom_id'",
        ),
        (json.dumps({**request_line(9), "method": "GET"}), r"Line 3 .*\(req-9\) has method 'GET'"),
        (json.dumps({**request_line(9), "url": "/v1/embeddings"}), r"Line 3 .*url '/v1/embeddings'"),
        (json.dumps({**request_line(9), "body": "hi"}), r"Line 3 .*JSON object 'body'"),
        (json.dumps(request_line(0)), r"Line 3 repeats custom_id 'req-0' of line 1"),
    ],
)
def test_a_bad_line_fails_the_task_with_its_number_and_nothing_is_sent(
    emulator, mka1_conn, tmp_path, line, message
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(request_line(0)) + "\n\n" + line + "\n" + json.dumps(request_line(5)) + "\n")

    with pytest.raises(MKA1InvalidInputError, match=message):
        job(tmp_path, requests=str(path)).execute(make_context())

    assert emulator.calls(method="*", path="*") == 0
    assert not (tmp_path / "results").exists()


def test_a_duplicate_far_apart_is_found_without_holding_the_ids(tmp_path) -> None:
    lines = [request_line(n) for n in range(25_000)] + [request_line(12_345)]
    path = write_jsonl(tmp_path / "in.jsonl", lines)

    with pytest.raises(MKA1InvalidInputError, match="Line 25001 repeats custom_id 'req-12345' of line 12346"):
        _split(tmp_path, str(path))


def test_shards_by_lines_and_by_bytes(tmp_path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", (request_line(n) for n in range(100)))
    size = len(json.dumps(request_line(50)).encode()) + 1

    by_lines = _split(tmp_path, str(path), max_requests=30)
    assert [s.requests for s in by_lines.shards] == [30, 30, 30, 10]
    by_bytes = _split(tmp_path, str(path), max_bytes=size * 7 + 3)
    assert all(s.bytes <= size * 7 + 3 for s in by_bytes.shards)
    assert sum(s.requests for s in by_bytes.shards) == 100 and len(by_bytes.shards) >= 15
    # Line boundaries: every shard is whole lines, and together they are the input, in order.
    joined = b"".join(s.path.read_bytes() for s in by_bytes.shards)
    assert joined == path.read_bytes()
    assert by_lines.fingerprint != by_bytes.fingerprint  # other shards, other batches

    with pytest.raises(MKA1InvalidInputError, match=r"Line 1 \(req-0\) is \d+ bytes, more than"):
        _split(tmp_path, str(path), max_bytes=50)


def test_the_fingerprint_follows_the_content(tmp_path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", (request_line(n) for n in range(5)))
    b = write_jsonl(tmp_path / "b.jsonl", (request_line(n) for n in range(5)))
    c = write_jsonl(
        tmp_path / "c.jsonl", (request_line(n, content="changed" if n == 3 else None) for n in range(5))
    )
    assert _split(tmp_path, str(a)).fingerprint == _split(tmp_path, str(b)).fingerprint
    assert _split(tmp_path, str(a)).fingerprint != _split(tmp_path, str(c)).fingerprint


def test_lists_of_dicts_and_prompt_strings() -> None:
    dicts = list(iter_request_lines([{"custom_id": "a", "body": {"model": "m", "messages": []}}], ENDPOINT))
    assert json.loads(dicts[0][1]) == {
        "custom_id": "a",
        "method": "POST",
        "url": ENDPOINT,
        "body": {"model": "m", "messages": []},
    }
    prompts = list(
        iter_request_lines(
            ["one", "two"], ENDPOINT, model="m", system_prompt="be brief", request_params={"temperature": 0}
        )
    )
    assert [c for _, _, c in prompts] == ["prompt-0", "prompt-1"]
    assert json.loads(prompts[1][1])["body"] == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two"}],
        "temperature": 0,
    }
    embeddings = list(iter_request_lines(["text"], "/v1/embeddings", model="e"))
    assert json.loads(embeddings[0][1])["body"] == {"model": "e", "input": "text"}
    with pytest.raises(MKA1InvalidInputError, match="Request 2 of the requests list is a int"):
        list(iter_request_lines([{"custom_id": "a", "body": {}}, 7], ENDPOINT))
    with pytest.raises(MKA1InvalidInputError, match="system_prompt has no meaning for /v1/embeddings"):
        list(iter_request_lines(["x"], "/v1/embeddings", model="e", system_prompt="s"))


@pytest.mark.parametrize(
    ("requests", "kwargs", "message"),
    [
        ("", {}, "empty path"),
        ([], {}, "empty list"),
        ({"custom_id": "a"}, {}, "got dict"),
        (["a prompt"], {}, "Prompt strings need model="),
        (["a prompt"], {"model": "m", "endpoint": "/v1/nope"}, "Invalid endpoint"),
        ("/nonexistent/requests.jsonl", {}, "Cannot read the requests file"),
    ],
)
def test_an_unusable_requests_argument_is_refused_before_any_request(
    emulator, mka1_conn, tmp_path, requests, kwargs, message
) -> None:
    with pytest.raises(MKA1InvalidInputError, match=message):
        job(tmp_path, requests=requests, **kwargs).execute(make_context())
    assert emulator.calls(method="*", path="*") == 0


def test_object_storage_input_is_streamed(tmp_path, memory_fs) -> None:
    path = ObjectStoragePath("memory://jobs-input/in.jsonl")
    with path.open("wb") as f:
        for n in range(7):
            f.write(json.dumps(request_line(n)).encode() + b"\n")
    prepared = _split(tmp_path, path, max_requests=3)
    assert prepared.requests == 7 and [s.requests for s in prepared.shards] == [3, 3, 1]
    assert (
        _split(tmp_path, "memory://jobs-input/in.jsonl", max_requests=3).fingerprint == prepared.fingerprint
    )


def test_operator_arguments_are_checked_when_the_dag_is_parsed(tmp_path) -> None:
    for kwargs, message in [
        ({"max_requests_per_batch": 0}, "max_requests_per_batch"),
        ({"max_bytes_per_batch": -1}, "max_bytes_per_batch"),
        ({"resubmit_rounds": -1}, "resubmit_rounds"),
        ({"on_input_change": "ignore"}, "on_input_change"),
        ({"max_failed_ratio": 2}, "max_failed_ratio"),
        ({"response_model": dict}, "response_model"),
        ({"metadata": {"airflow_job": "x"}}, "airflow_"),
        ({"stall_timeout": 0}, "stall_timeout"),
    ]:
        with pytest.raises(ValueError, match=message):
            job(tmp_path, requests="x.jsonl", **kwargs)
