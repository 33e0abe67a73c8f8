"""``python -m airflow_provider_batches.emulator``: start, serve with the default timings, stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from emulator_helpers import jsonl

from airflow_provider_batches.emulator import EmulatorAdmin

REPO = str(Path(__file__).resolve().parents[2])
READY = re.compile(r"^MKA1 emulator listening on (http://127\.0\.0\.1:(\d+))$")


@contextmanager
def cli(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_batches.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = READY.match(line)
        assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        assert int(match.group(2)) > 0
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_cli_serves_with_default_timings_and_stops_on_sigterm(tmp_path: Path) -> None:
    with cli("--api-key", "cli-key", env={"TMPDIR": str(tmp_path)}) as (proc, base_url):
        assert list(tmp_path.iterdir()), "the emulator keeps its state in a temporary directory"
        headers = {"Authorization": "Bearer cli-key"}
        f = requests.post(
            f"{base_url}/api/v1/llm/files",
            headers=headers,
            files={"file": ("in.jsonl", jsonl(10))},
            data={"purpose": "batch"},
            timeout=10,
        ).json()
        created = requests.post(
            f"{base_url}/api/v1/llm/batches",
            headers=headers,
            json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            timeout=10,
        ).json()
        start = time.monotonic()
        while True:
            batch = requests.get(
                f"{base_url}/api/v1/llm/batches/{created['id']}", headers=headers, timeout=10
            ).json()
            if batch["status"] == "completed":
                break
            assert time.monotonic() - start < 5, f"still {batch['status']} after 5 s"
            time.sleep(0.05)
        assert batch["completed_at"] - batch["created_at"] <= 5
        assert batch["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
        assert EmulatorAdmin(base_url).calls(method="POST") == 2
        assert requests.get(f"{base_url}/api/v1/llm/files", timeout=10).status_code == 401

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert list(tmp_path.iterdir()) == [], "the temporary data directory is removed on exit"


def test_cli_keeps_a_given_data_dir_and_several_keys(tmp_path: Path) -> None:
    args = ("--api-key", "k1", "--api-key", "k2", "--data-dir", str(tmp_path), "--latency", "0.1")
    concurrency = ("--default-line-concurrency", "3", "--max-line-concurrency", "5")
    with cli(*args, *concurrency) as (proc, url):
        for key in ("k1", "k2"):
            start = time.monotonic()
            r = requests.get(
                f"{url}/api/v1/llm/batches", headers={"Authorization": f"Bearer {key}"}, timeout=10
            )
            assert r.status_code == 200 and time.monotonic() - start >= 0.1
        auth = {"Authorization": "Bearer k1"}
        f = requests.post(
            f"{url}/api/v1/llm/files",
            files={"file": ("a.jsonl", b"{}\n")},
            data={"purpose": "batch"},
            headers=auth,
        ).json()
        create = {"input_file_id": f["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
        r = requests.post(f"{url}/api/v1/llm/batches", json=create, headers=auth, timeout=10)
        assert r.json()["max_concurrency"] == 3
        r = requests.post(f"{url}/api/v1/llm/batches", json={**create, "max_concurrency": 6}, headers=auth)
        assert r.status_code == 400 and "from 1 to 5" in r.json()["error"]["message"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    assert (tmp_path / "clock.json").exists() and (tmp_path / "batches").is_dir()


def test_cli_rejects_bad_arguments() -> None:
    for args in (
        [],
        ["--api-key", "k", "--lines-per-second", "0"],
        ["--api-key", "k", "--default-line-concurrency", "9", "--max-line-concurrency", "8"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "airflow_provider_batches.emulator", "--port", "0", *args],
            capture_output=True,
            env={**os.environ, "PYTHONPATH": REPO},
            text=True,
            timeout=30,
        )
        assert r.returncode == 2 and "usage:" in r.stderr
