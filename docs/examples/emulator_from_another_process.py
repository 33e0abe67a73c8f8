"""
Run the emulator as its own process and drive it from this one with ``EmulatorAdmin``: a
429 with ``Retry-After``, the clock moved past a batch's window, the call counts. Needs
no Airflow connection.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from airflow_provider_batches.emulator import EmulatorAdmin
from airflow_provider_batches.hooks.mka1 import MKA1Hook


def main() -> None:
    # --8<-- [start:start]
    # Ten lines at 0.1 line a second need 100 s, more than the 60 s window: this batch
    # will expire.
    command = [sys.executable, "-m", "airflow_provider_batches.emulator", "--port", "0"]
    command += [
        "--api-key",
        "demo-key",
        "--lines-per-second",
        "0.1",
        "--completion-window-seconds",
        "60",
    ]
    emulator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    # "MKA1 emulator listening on http://127.0.0.1:<port>"
    ready = emulator.stdout.readline()
    base_url = ready.rsplit(" ", 1)[-1].strip()
    # --8<-- [end:start]
    try:
        drive(base_url)
    finally:
        emulator.terminate()
    assert emulator.wait(timeout=30) == 0  # SIGTERM is a clean stop


def drive(base_url: str) -> None:
    # --8<-- [start:drive]
    admin = EmulatorAdmin(base_url)
    hook = MKA1Hook.from_credentials(base_url, "demo-key")
    with tempfile.TemporaryDirectory() as workdir:
        requests_file = Path(workdir) / "requests.jsonl"
        with requests_file.open("w") as f:
            for n in range(10):
                body = {"model": "mka1-embed", "input": f"document {n}"}
                line = {
                    "custom_id": f"doc-{n}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": body,
                }
                f.write(json.dumps(line) + "\n")
        batch = hook.submit_batch("/v1/embeddings", input_path=requests_file)

    # The next read of the batch answers 429 with Retry-After: 1; the hook waits a
    # second and retries.
    admin.add_fault(
        method="GET", path="/api/v1/llm/batches/*", status=429, retry_after=1, count=1
    )
    assert hook.get_batch(batch.id).status in ("validating", "in_progress")
    assert admin.calls("GET", "/api/v1/llm/batches/*", status=429) == 1

    # Jump 120 s of emulator time: the window (60 s) ends with 5 or 6 of the 10 lines
    # done.
    admin.advance_clock(120)
    batch = hook.get_batch(batch.id)
    assert batch.status == "expired"
    assert 0 < batch.request_counts.completed < 10
    assert (
        sum(1 for line in hook.iter_results(batch.output_file_id) if line.ok)
        == batch.request_counts.completed
    )
    # --8<-- [end:drive]


if __name__ == "__main__":
    main()
