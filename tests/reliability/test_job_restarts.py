"""A batch job's worker SIGKILLed at each stage, then retried: never a second batch, never a partial file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import API_KEY, connection_json
from tests.jobs.conftest import emulator_session  # noqa: F401 (the job tests' own emulator)
from tests.reliability.support import assert_no_secret

REPO = Path(__file__).resolve().parents[2]
LINES = 35  # 4 shards of at most 10


def _worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._job_worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _job_batches(api_url: str, run_id: str) -> list[dict[str, Any]]:
    """The batches of this job: by the task instance's key in their metadata, as the operator finds them."""
    from airflow_provider_batches.hooks.mka1 import idempotency_key_for
    from tests.reliability.support import FakeTI, make_context

    key = idempotency_key_for(make_context(FakeTI(task_id="job", run_id=run_id)))
    answer = requests.get(
        f"{api_url}/batches",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    answer.raise_for_status()
    return [b for b in answer.json()["data"] if (b.get("metadata") or {}).get("airflow_job") == key]


@pytest.mark.parametrize("stage", ["split", "upload", "wait", "merge"])
def test_a_job_killed_at_each_stage_then_retried_makes_each_batch_once(emulator, tmp_path, stage) -> None:
    source = tmp_path / "requests.jsonl"
    with source.open("w") as f:
        for n in range(LINES):
            body = {"model": "m", "messages": [{"role": "user", "content": f"{stage} {n}"}]}
            f.write(
                json.dumps(
                    {"custom_id": f"r-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                )
            )
            f.write("\n")
    results, scratch = tmp_path / "results", tmp_path / "scratch"
    run_id = f"manual__{uuid.uuid4().hex}"
    env = {**os.environ, "AIRFLOW_CONN_MKA1_DEFAULT": connection_json(emulator.base_url, backoff_base=0.01)}
    args = (run_id, str(source), str(results), str(scratch))

    worker = _worker(env, *args, stage)
    try:
        assert worker.stdout is not None
        for line in worker.stdout:
            if line.strip() == f"at {stage}":
                break
        else:
            pytest.fail(
                f"the worker never reached {stage}: {worker.stderr.read()[-3000:] if worker.stderr else ''}"
            )
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
    assert worker.returncode == -signal.SIGKILL
    killed_with = len(_job_batches(emulator.api_url, run_id))
    assert killed_with == {"split": 0, "upload": 1, "wait": 4, "merge": 4}[stage]
    assert not (results / "results.jsonl").exists()

    retry = _worker(env, *args)
    out, err = retry.communicate(timeout=120)
    assert retry.returncode == 0, err[-3000:]
    assert_no_secret(API_KEY, out, err, where="a worker's output")
    manifest = json.loads(out.strip().splitlines()[-1])

    batches = _job_batches(emulator.api_url, run_id)
    assert len(batches) == 4 and sorted(b["id"] for b in batches) == sorted(manifest["batches"][0])
    assert emulator.calls(method="POST", path="/api/v1/llm/batches") == 4
    rows = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == [f"r-{n}" for n in range(LINES)]
    assert all(r["error"] is None and r["attempts"] == 1 for r in rows)
    assert sorted(p.name for p in results.iterdir()) == ["manifest.json", "results.jsonl"]
