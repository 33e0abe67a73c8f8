"""A file over 100 MB goes up and comes back streamed: the client's memory stays bounded."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import connection_json

SIZE = 110 * 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024

# Runs in a fresh interpreter so that the peak resident set (VmHWM) measures this transfer and nothing else.
MEASURE = textwrap.dedent(
    """
    import json, sys, time
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

    def peak_kb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    source, destination, user = sys.argv[1:4]
    hook = MKA1Hook(on_behalf_of=user)
    assert hook.test_connection()[0]  # imports, connection and session are warm before the baseline
    baseline = peak_kb()
    started = time.monotonic()
    file = hook.upload_file(source)
    uploaded = time.monotonic()
    result = hook.download_file(file.id, destination)
    print(json.dumps({
        "baseline_kb": baseline,
        "peak_kb": peak_kb(),
        "upload_s": round(uploaded - started, 2),
        "download_s": round(time.monotonic() - uploaded, 2),
        "bytes": result.bytes,
        "lines": result.lines,
        "uploaded_bytes": file.bytes,
    }))
    """
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_large_file_round_trip_in_bounded_memory(emulator, tmp_path: Path, end_user: str) -> None:
    source = tmp_path / "big.jsonl"
    line = (
        json.dumps(
            {"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {"input": "y" * 900}}
        ).encode()
        + b"\n"
    )
    block = line * ((1 << 20) // len(line))
    with source.open("wb") as handle:
        while handle.tell() < SIZE:
            handle.write(block)
    size = source.stat().st_size
    lines = size // len(line)
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    env = {**os.environ, "AIRFLOW_CONN_MKA1_DEFAULT": connection_json(emulator.base_url)}
    run = subprocess.run(
        [sys.executable, str(script), str(source), str(tmp_path / "back.jsonl"), end_user],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nlarge file: {size / 2**20:.0f} MiB, {figures}")
    assert (figures["uploaded_bytes"], figures["bytes"], figures["lines"]) == (size, size, lines)
    growth = (figures["peak_kb"] - figures["baseline_kb"]) * 1024
    assert growth < MAX_GROWTH, f"peak memory grew by {growth / 2**20:.1f} MiB"
    assert _sha256(tmp_path / "back.jsonl") == _sha256(source)
