"""MKA1BatchJobOperator over HTTP against the emulator: shards, rounds, results, manifest, retries."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath, TaskDeferred
from pydantic import BaseModel

from airflow_provider_batches.exceptions import MKA1BatchPartialFailureError, MKA1Error, MKA1InvalidInputError
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import BatchStatus
from airflow_provider_batches.triggers.mka1_job import MKA1BatchJobTrigger
from tests.conftest import make_context
from tests.jobs.conftest import job, read_rows, request_line, run_job, write_jsonl

CREATES = "/api/v1/llm/batches"
UPLOADS = "/api/v1/llm/files"
CANCELS = "/api/v1/llm/batches/*/cancel"
TRANSIENT = {"code": "server_error", "message": "upstream hiccup", "times": 1}
PERMANENT = {"code": "content_filter", "message": "blocked"}


def _check_manifest_against_rows(manifest: dict, rows: list[dict]) -> None:
    counts = manifest["counts"]
    assert counts["requests"] == len(rows)
    assert counts["succeeded"] == sum(1 for r in rows if r["error"] is None)
    failed = Counter(
        r["error"]["code"] for r in rows if r["error"] and r["error"]["code"] != "invalid_output"
    )
    never = sum(failed.pop(code, 0) for code in ("batch_expired", "batch_cancelled", "missing_result"))
    assert counts["failed"] == dict(failed) and counts["never_ran"] == never
    assert counts["invalid_output"] == sum(
        1 for r in rows if r["error"] and r["error"]["code"] == "invalid_output"
    )
    assert counts["resubmitted"] == sum(r["attempts"] - 1 for r in rows)
    usage = Counter()
    for r in rows:
        for key, value in ((r["response"] or {}).get("usage") or {}).items():
            usage[key] += value
    assert manifest["usage"] == dict(usage) and manifest["usage"]["total_tokens"] > 0
    assert set(manifest) >= {"results", "counts", "batches", "rounds", "usage", "elapsed_seconds"}


@pytest.mark.parametrize("deferrable", [False, True])
def test_one_row_per_request_in_input_order_across_shards_and_rounds(
    emulator, mka1_conn, tmp_path, deferrable
) -> None:
    fails = {3: TRANSIENT, 11: TRANSIENT, 12: PERMANENT, 24: TRANSIENT}
    # The emulator counts the runs of each line (custom_id and body) per owner: a body of this test only.
    lines = (request_line(n, fail=fails.get(n), content=f"{tmp_path.name} {n}") for n in range(25))
    path = write_jsonl(tmp_path / "in.jsonl", lines)
    context = make_context()

    op = job(
        tmp_path, requests=str(path), max_requests_per_batch=10, max_failed_ratio=0.1, deferrable=deferrable
    )
    manifest = run_job(op, context)

    rows = read_rows(manifest["results"])
    assert [r["custom_id"] for r in rows] == [f"req-{n}" for n in range(25)]
    assert [r["custom_id"] for r in rows if r["attempts"] == 2] == ["req-3", "req-11", "req-24"]
    assert all(r["error"] is None for r in rows if r["custom_id"] != "req-12")
    assert rows[12]["error"] == {"code": "content_filter", "message": "blocked"} and rows[12]["attempts"] == 1
    assert manifest["rounds"] == 2 and [len(b) for b in manifest["batches"]] == [3, 1]
    assert manifest["counts"]["failed"] == {"content_filter": 1} and manifest["counts"]["resubmitted"] == 3
    assert {r["batch_id"] for r in rows if r["attempts"] == 2} == set(manifest["batches"][1])
    _check_manifest_against_rows(manifest, rows)
    assert emulator.calls(method="POST", path=CREATES) == 4
    assert context["ti"].xcoms["manifest"] == manifest
    assert json.loads((tmp_path / "results" / "manifest.json").read_text())["counts"] == manifest["counts"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["manifest.json", "results.jsonl"]


def test_a_retry_reattaches_to_every_batch_and_creates_none(emulator, mka1_conn, tmp_path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", (request_line(n) for n in range(30)))
    context = make_context()
    op = job(tmp_path, requests=str(path), max_requests_per_batch=10, deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(context)
    assert emulator.calls(method="POST", path=CREATES) == 3

    retry = make_context(run_id=context["run_id"])  # the next try of the same task instance
    manifest = run_job(job(tmp_path, requests=str(path), max_requests_per_batch=10), retry)

    assert (
        emulator.calls(method="POST", path=CREATES) == 3 and emulator.calls(method="POST", path=UPLOADS) == 3
    )
    assert manifest["counts"]["succeeded"] == 30
    # A new DAG run is a new job.
    run_job(job(tmp_path, requests=str(path), max_requests_per_batch=10), make_context())
    assert emulator.calls(method="POST", path=CREATES) == 6


def test_permanent_failures_are_never_resubmitted_and_fail_the_ratio(emulator, mka1_conn, tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl", (request_line(n, fail=PERMANENT if n < 3 else None) for n in range(10))
    )
    context = make_context()

    with pytest.raises(
        MKA1BatchPartialFailureError, match=r"3 of 10 requests have no answer .*results.jsonl"
    ):
        job(tmp_path, requests=str(path), max_failed_ratio=0.2).execute(context)

    manifest = context["ti"].xcoms["manifest"]  # pushed before the outcome, and the files are written
    assert manifest["rounds"] == 1 and manifest["counts"]["failed"] == {"content_filter": 3}
    rows = read_rows(tmp_path / "results" / "results.jsonl")
    assert [r["attempts"] for r in rows] == [1] * 10
    assert emulator.calls(method="POST", path=CREATES) == 1


def test_transient_failures_left_after_the_last_round_are_failures(emulator, mka1_conn, tmp_path) -> None:
    always = {"code": "rate_limit_exceeded", "message": "slow down"}
    path = write_jsonl(
        tmp_path / "in.jsonl", (request_line(n, fail=always if n == 1 else None) for n in range(4))
    )

    manifest = job(tmp_path, requests=str(path), resubmit_rounds=2, max_failed_ratio=0.5).execute(
        make_context()
    )

    rows = read_rows(manifest["results"])
    assert rows[1]["attempts"] == 3 and rows[1]["error"]["code"] == "rate_limit_exceeded"
    assert manifest["rounds"] == 3 and manifest["counts"]["failed"] == {"rate_limit_exceeded": 1}


def test_resubmit_codes_choose_what_is_transient(emulator, mka1_conn, tmp_path) -> None:
    flaky = {"code": "content_filter", "message": "blocked", "times": 1}
    path = write_jsonl(
        tmp_path / "in.jsonl", (request_line(n, fail=flaky if n == 0 else None) for n in range(3))
    )

    manifest = job(tmp_path, requests=str(path), resubmit_codes={"content_filter"}).execute(make_context())

    assert manifest["rounds"] == 2 and manifest["counts"]["succeeded"] == 3


@pytest.fixture
def a_day_passes_after_each_create(own_emulator, monkeypatch) -> list[str]:
    create = MKA1Hook.submit_batch
    created: list[str] = []

    def create_then_a_day_passes(self, *args, **kwargs):
        batch = create(self, *args, **kwargs)
        created.append(batch.id)
        own_emulator.advance_clock(90_000)
        return batch

    monkeypatch.setattr(MKA1Hook, "submit_batch", create_then_a_day_passes)
    return created


def test_lines_an_expired_batch_never_ran_go_into_the_next_round(
    own_conn, tmp_path, a_day_passes_after_each_create
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", (request_line(n) for n in range(20)))

    manifest = job(tmp_path, requests=str(path), max_requests_per_batch=10).execute(make_context())

    # Each batch of round 0 ran 8 of its 10 lines before its window ended; round 1 ran the 4 others.
    assert [MKA1Hook().get_batch(b).status for b in manifest["batches"][0]] == [BatchStatus.EXPIRED] * 2
    assert MKA1Hook().get_batch(manifest["batches"][1][0]).status == BatchStatus.COMPLETED
    rows = read_rows(manifest["results"])
    assert [r["custom_id"] for r in rows] == [f"req-{n}" for n in range(20)]
    assert all(r["error"] is None for r in rows)
    assert [r["custom_id"] for r in rows if r["attempts"] == 2] == ["req-8", "req-9", "req-18", "req-19"]
    assert manifest["rounds"] == 2 and manifest["counts"]["resubmitted"] == 4
    _check_manifest_against_rows(manifest, rows)


def test_never_ran_after_the_last_round(own_conn, tmp_path, a_day_passes_after_each_create) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", (request_line(n) for n in range(12)))
    context = make_context()

    with pytest.raises(MKA1BatchPartialFailureError, match="never_ran 4"):
        job(tmp_path, requests=str(path), resubmit_rounds=0).execute(context)

    rows = read_rows(tmp_path / "results" / "results.jsonl")
    assert [r["error"]["code"] for r in rows if r["error"]] == ["batch_expired"] * 4
    assert context["ti"].xcoms["manifest"]["counts"]["never_ran"] == 4


class Verdict(BaseModel):
    label: str
    score: int


def test_structured_output_and_invalid_output(emulator, mka1_conn, tmp_path) -> None:
    prompts = [f"classify {n}" for n in range(6)]
    # The last one overrides the response format: its answer is prose, which is not a Verdict.
    op = job(
        tmp_path,
        requests=prompts,
        model="mka1-small",
        system_prompt="Answer in JSON.",
        response_model=Verdict,
        max_failed_ratio=0.5,
    )
    manifest = op.execute(make_context())
    rows = read_rows(manifest["results"])
    assert [r["custom_id"] for r in rows] == [f"prompt-{n}" for n in range(6)]
    assert all(Verdict.model_validate(r["output"]) for r in rows)

    bad = job(
        tmp_path,
        requests=prompts[:2],
        model="m",
        response_model=Verdict,
        request_params={"response_format": None},
        max_failed_ratio=1.0,
    )
    manifest = bad.execute(make_context())
    rows = read_rows(manifest["results"])
    assert manifest["counts"]["invalid_output"] == 2 and manifest["counts"]["succeeded"] == 0
    assert rows[0]["output"] is None and rows[0]["error"]["code"] == "invalid_output"
    assert "Verdict" in rows[0]["error"]["message"] or "JSON" in rows[0]["error"]["message"]
    assert rows[0]["response"]["choices"]  # the answer is kept
    _check_manifest_against_rows(manifest, rows)


def test_object_storage_result_path_and_raw_files(emulator, mka1_conn, tmp_path, memory_fs) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl", (request_line(n, fail=PERMANENT if n == 2 else None) for n in range(12))
    )
    manifest = job(
        tmp_path,
        requests=str(path),
        result_path="memory://answers/run-1/",
        max_requests_per_batch=5,
        keep_raw_files=True,
        max_failed_ratio=0.5,
    ).execute(make_context())

    results = ObjectStoragePath("memory://answers/run-1/results.jsonl")
    assert manifest["results"] == str(results)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == [f"req-{n}" for n in range(12)]
    raw = sorted(p.name for p in ObjectStoragePath("memory://answers/run-1/raw/").iterdir())
    assert (
        len([n for n in raw if n.endswith("_output.jsonl")]) == 3
        and len([n for n in raw if "_error" in n]) == 1
    )
    assert not [p for p in ObjectStoragePath("memory://answers/run-1/").iterdir() if p.name.endswith(".part")]


def test_a_changed_input_cancels_and_resubmits(emulator, mka1_conn, tmp_path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", (request_line(n) for n in range(300)))
    context = make_context()
    with pytest.raises(TaskDeferred):
        job(tmp_path, requests=str(first), deferrable=True).execute(context)
    old = next(b for b in MKA1Hook().list_batches() if b.metadata and b.metadata.get("airflow_job"))

    changed = write_jsonl(tmp_path / "b.jsonl", (request_line(n, content="new") for n in range(5)))
    manifest = run_job(job(tmp_path, requests=str(changed)), make_context(run_id=context["run_id"]))

    assert MKA1Hook().get_batch(old.id).status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert manifest["counts"]["succeeded"] == 5 and old.id not in manifest["batches"][0]
    assert emulator.calls(method="POST", path=CREATES) == 2


def test_a_changed_input_fails_with_on_input_change_fail(emulator, mka1_conn, tmp_path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", (request_line(n) for n in range(5)))
    context = make_context()
    job(tmp_path, requests=str(first)).execute(context)
    changed = write_jsonl(tmp_path / "b.jsonl", (request_line(n) for n in range(6)))
    emulator.reset_calls()

    with pytest.raises(MKA1InvalidInputError, match=r"input changed .* on_input_change='fail'"):
        job(tmp_path, requests=str(changed), on_input_change="fail").execute(
            make_context(run_id=context["run_id"])
        )
    assert emulator.calls(method="POST", path="*") == 0


def test_timeout_cancels_the_batches_and_a_retry_goes_on(emulator, mka1_conn, tmp_path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", (request_line(n) for n in range(600)))
    context = make_context()
    with pytest.raises(MKA1Error, match=r"Timed out: .* Cancelled 2 unfinished batches"):
        job(tmp_path, requests=str(path), max_requests_per_batch=300, timeout=0.5).execute(context)
    assert emulator.calls(method="POST", path=CANCELS) == 2

    manifest = job(tmp_path, requests=str(path), max_requests_per_batch=300).execute(
        make_context(run_id=context["run_id"])
    )
    assert manifest["counts"]["succeeded"] == 600 and manifest["rounds"] == 2
    assert 0 < manifest["counts"]["resubmitted"] <= 600


def test_the_deferred_timeout_keeps_the_batches_with_cancel_on_timeout_off(
    emulator, mka1_conn, tmp_path
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", (request_line(n) for n in range(600)))
    op = job(tmp_path, requests=str(path), timeout=0.3, cancel_on_timeout=False, deferrable=True)
    with pytest.raises(MKA1Error, match="left running"):
        run_job(op, make_context())
    assert emulator.calls(method="POST", path=CANCELS) == 0


def test_the_job_trigger_serializes_without_secrets(emulator, mka1_conn) -> None:
    trigger = MKA1BatchJobTrigger(batch_ids=["batch_a", "batch_b"], deadline=123.0, stall_timeout=60.0)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_batches.triggers.mka1_job.MKA1BatchJobTrigger"
    assert "test-key" not in json.dumps(kwargs)
    assert MKA1BatchJobTrigger(**kwargs).serialize() == (path, kwargs)


def test_killed_while_waiting_in_the_worker_cancels_only_the_unfinished_batches(
    emulator, mka1_conn, tmp_path
) -> None:
    import threading

    # Two shards: 10 lines that finish at once, 2,000 that take about 10 s.
    path = write_jsonl(tmp_path / "in.jsonl", (request_line(n) for n in range(2010)))
    op = job(tmp_path, requests=str(path), max_requests_per_batch=2000, resubmit_rounds=0)
    hook = MKA1Hook()
    seen: list[list] = []

    def kill_once_one_is_done() -> None:
        # What Airflow does when the task is killed: on_kill, from outside the running execute.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batches = [b for b in hook.list_batches() if b.id in op._waiting_on]
            if len(batches) == 2 and sorted(b.is_terminal for b in batches) == [False, True]:
                seen.append(batches)
                op.on_kill()
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_once_one_is_done, daemon=True)
    killer.start()
    # The wait sees the cancel and the job ends: the lines that never ran are its failures.
    with pytest.raises(MKA1Error):
        op.execute(make_context())
    killer.join(30)

    assert seen, "the job never had one batch done and one running"
    (running,) = [b for b in seen[0] if not b.is_terminal]
    assert emulator.calls(method="POST", path=CANCELS) == 1
    assert hook.get_batch(running.id).status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
