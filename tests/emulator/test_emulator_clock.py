"""Expiry, the scaled and advanceable clock, and a restart on the same data directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

from emulator_helpers import FAST, KEY, Client, jsonl, read_jsonl

from airflow_provider_batches.emulator import run_emulator


def test_advance_clock_expires_a_running_batch_with_partial_output() -> None:
    # One line per 10,000 s: 20 lines need 200,000 s, far beyond the 86,400 s window.
    with run_emulator(api_keys=(KEY,), validation_seconds=0.1, lines_per_second=0.0001) as emu:
        api = Client(emu)
        b = api.submit(jsonl(20, fail={2}))
        api.wait(b["id"], {"in_progress"})
        before = emu.now()
        assert emu.advance_clock(86400) >= before + 86400

        expired = api.batch(b["id"])  # advance_clock returns once transitions are materialised
        assert expired["status"] == "expired"
        assert expired["expired_at"] == expired["expires_at"] == expired["created_at"] + 86400
        assert expired["completed_at"] is None and expired["finalizing_at"] is None
        done = 8  # lines finished by the end of the window: (86400 - 0.1) s at 0.0001 lines/s
        assert expired["request_counts"] == {"total": 20, "completed": done - 1, "failed": 1}
        out = read_jsonl(api.content(expired["output_file_id"]))
        assert sorted(r["custom_id"] for r in out) == sorted(f"req-{i}" for i in range(done) if i != 2)
        assert [r["custom_id"] for r in read_jsonl(api.content(expired["error_file_id"]))] == ["req-2"]

        later = api.submit(jsonl(1))
        assert later["created_at"] >= int(before) + 86400


def test_a_scaled_clock_shows_a_24h_expiry_in_seconds() -> None:
    # The clock runs 43,200 times faster: the 24 h window passes in 2 s of real time.
    with run_emulator(
        api_keys=(KEY,), validation_seconds=1, lines_per_second=0.0001, time_scale=43200
    ) as emu:
        api = Client(emu)
        start = time.monotonic()
        b = api.submit(jsonl(20))
        expired = api.wait(b["id"], timeout=10)
        assert expired["status"] == "expired"
        assert 1.0 < time.monotonic() - start < 6.0
        assert expired["expired_at"] - expired["created_at"] == 86400
        assert expired["in_progress_at"] - expired["created_at"] in (0, 1, 2)
        assert 0 < expired["request_counts"]["completed"] < 20


def test_completion_window_seconds_shortens_the_window() -> None:
    with run_emulator(
        api_keys=(KEY,), **{**FAST, "lines_per_second": 10.0}, completion_window_seconds=1
    ) as emu:
        api = Client(emu)
        b = api.submit(jsonl(100))  # 10 s of work in a 1 s window
        assert b["expires_at"] == b["created_at"] + 1
        expired = api.wait(b["id"], timeout=5)
        assert expired["status"] == "expired" and expired["completion_window"] == "24h"
        assert 0 < expired["request_counts"]["completed"] < 100
        assert (
            len(read_jsonl(api.content(expired["output_file_id"]))) == expired["request_counts"]["completed"]
        )


def test_a_batch_that_outlives_validation_expires_without_output() -> None:
    with run_emulator(api_keys=(KEY,), validation_seconds=5, completion_window_seconds=0.3) as emu:
        api = Client(emu)
        expired = api.wait(api.submit(jsonl(3))["id"], timeout=5)
        assert expired["status"] == "expired"
        assert expired["in_progress_at"] is None and expired["output_file_id"] is None
        assert expired["request_counts"] == {"total": 0, "completed": 0, "failed": 0}


def test_restart_on_the_same_data_dir_keeps_files_and_batches_running(tmp_path: Path) -> None:
    timings = {"validation_seconds": 0.1, "lines_per_second": 20.0, "finalizing_seconds": 0.1}
    with run_emulator(api_keys=(KEY,), data_dir=tmp_path, **timings) as emu:
        api = Client(emu)
        finished = api.wait(api.submit(jsonl(2, prefix="early"))["id"])
        running = api.submit(jsonl(40))  # 2 s of work
        api.wait(running["id"], {"in_progress"})
        before = api.batch(running["id"])
        assert before["status"] == "in_progress"

    assert (tmp_path / "batches" / f"{running['id']}.json").exists()
    with run_emulator(api_keys=(KEY,), data_dir=tmp_path, **timings) as emu:
        api = Client(emu)
        after = api.batch(running["id"])
        assert after["status"] in ("in_progress", "finalizing", "completed")
        assert (
            after["created_at"] == before["created_at"]
            and after["in_progress_at"] == before["in_progress_at"]
        )
        assert after["request_counts"]["completed"] >= before["request_counts"]["completed"]

        done = api.wait(running["id"])
        assert done["status"] == "completed"
        assert sorted(r["custom_id"] for r in read_jsonl(api.content(done["output_file_id"]))) == sorted(
            f"req-{i}" for i in range(40)
        )
        assert api.batch(finished["id"])["status"] == "completed"
        assert len(read_jsonl(api.content(finished["output_file_id"]))) == 2
        assert api.get(f"/files/{running['input_file_id']}").json()["bytes"] == len(jsonl(40))
        listed = {b["id"] for b in api.get("/batches").json()["data"]}
        assert {running["id"], finished["id"]} <= listed
        # New ids never collide with the old ones, and new ones list first.
        newer = api.submit(jsonl(1))
        assert api.get("/batches", params={"limit": 1}).json()["data"][0]["id"] == newer["id"]
    assert (tmp_path / "files").is_dir()  # a given data dir is kept


def test_records_of_an_older_emulator_are_served_in_the_sdks_shapes(tmp_path: Path) -> None:
    with run_emulator(api_keys=(KEY,), data_dir=tmp_path, **FAST) as emu:
        api = Client(emu)
        done = api.wait(api.submit(jsonl(2))["id"])
    # What emulators before the SDK contract wrote: no max_concurrency, purpose batch_output, any type.
    batch_json = tmp_path / "batches" / f"{done['id']}.json"
    file_json = tmp_path / "files" / f"{done['output_file_id']}.json"
    for path, changes in (
        (batch_json, {"max_concurrency": None}),
        (file_json, {"purpose": "batch_output", "content_type": "application/octet-stream"}),
    ):
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    with run_emulator(api_keys=(KEY,), data_dir=tmp_path, **FAST) as emu:
        api = Client(emu)
        assert api.batch(done["id"])["max_concurrency"] == emu.settings.default_line_concurrency
        assert api.get(f"/files/{done['output_file_id']}").json()["purpose"] == "batch"
        content = api.get(f"/files/{done['output_file_id']}/content")
        assert content.headers["Content-Type"] == "application/jsonl"


def test_a_temporary_data_dir_is_removed_on_exit() -> None:
    with run_emulator(api_keys=(KEY,), **FAST) as emu:
        data_dir = emu.data_dir
        Client(emu).upload(jsonl(1))
        assert any((data_dir / "blobs").iterdir())
    assert not data_dir.exists()
