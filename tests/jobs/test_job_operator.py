"""MKA1BatchJobOperator over HTTP against the emulator: shards, rounds, results, manifest."""

from __future__ import annotations

from airflow_provider_batches.hooks.mka1 import MKA1Hook
from tests.jobs.conftest import job, read_rows, request_line, write_jsonl
from tests.triggers.helpers import make_context

CREATES = "/api/v1/llm/batches"
UPLOADS = "/api/v1/llm/files"


def test_one_row_per_request_in_input_order_across_shards(emulator, mka1_conn, tmp_path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", (request_line(n) for n in range(25)))
    context = make_context()

    manifest = job(tmp_path, requests=str(path), max_requests_per_batch=10).execute(context)

    rows = read_rows(manifest["results"])
    assert [r["custom_id"] for r in rows] == [f"req-{n}" for n in range(25)]
    assert all(r["error"] is None and r["response"]["choices"] for r in rows)
    assert manifest["counts"]["requests"] == 25 and manifest["counts"]["succeeded"] == 25
    assert len(manifest["batches"][0]) == 3
    assert emulator.calls(method="POST", path=CREATES) == 3
    assert emulator.calls(method="POST", path=UPLOADS) == 3
    batch = MKA1Hook().get_batch(manifest["batches"][0][0])
    assert batch.request_counts.total == 10
