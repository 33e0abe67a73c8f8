"""Peak memory of the emulator while it takes a 1 GiB upload and serves it back.

Runs the emulator CLI as a subprocess, uploads generated JSONL (streamed, chunked multipart: the client
never holds the file either), downloads its content to nowhere, and reads the emulator's VmHWM (peak RSS)
from /proc. Linux only.

    python benchmarks/emulator_memory.py [--size-mib 1024] [--limit-mib 150]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

KEY = "memory-benchmark-key"
BOUNDARY = "mka1-memory-benchmark"
REPO = Path(__file__).resolve().parents[1]


def _kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, f"no {field} in /proc/{pid}/status"
    return int(match.group(1))


def _jsonl(size: int) -> Iterator[bytes]:
    """About ``size`` bytes of request lines, 1 MiB at a time."""
    filler = "x" * 900
    sent = n = 0
    while sent < size:
        lines = []
        for _ in range(1000):
            n += 1
            body = {"model": "m", "messages": [{"role": "user", "content": filler}]}
            line = {"custom_id": f"req-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            lines.append(json.dumps(line))
        chunk = ("\n".join(lines) + "\n").encode()
        sent += len(chunk)
        yield chunk


def _multipart(size: int) -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    yield from _jsonl(size)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--limit-mib", type=float, default=150.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mka1-emulator-memory-") as data_dir:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_batches.emulator",
                "--port",
                "0",
                "--api-key",
                KEY,
                "--data-dir",
                data_dir,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            base_url = line.rsplit(" ", 1)[-1]
            assert base_url.startswith("http://"), line
            api = f"{base_url}/api/v1/llm"
            headers = {"Authorization": f"Bearer {KEY}"}
            idle = _kib(proc.pid, "VmHWM")

            start = time.monotonic()
            r = requests.post(
                f"{api}/files",
                data=_multipart(args.size_mib << 20),
                headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                timeout=600,
            )
            r.raise_for_status()
            file = r.json()
            upload_s = time.monotonic() - start
            after_upload = _kib(proc.pid, "VmHWM")

            start = time.monotonic()
            received = 0
            with requests.get(
                f"{api}/files/{file['id']}/content", headers=headers, stream=True, timeout=600
            ) as r:
                r.raise_for_status()
                for chunk in r.iter_content(1 << 20):
                    received += len(chunk)
            download_s = time.monotonic() - start
            assert received == file["bytes"], (received, file["bytes"])
            peak = _kib(proc.pid, "VmHWM")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    mib = file["bytes"] / (1 << 20)
    print(f"file: {file['bytes']} bytes ({mib:.0f} MiB)")
    print(f"upload:   {upload_s:6.1f} s ({mib / upload_s:.0f} MiB/s)")
    print(f"download: {download_s:6.1f} s ({mib / download_s:.0f} MiB/s)")
    print(
        f"emulator peak RSS (VmHWM): idle {idle / 1024:.1f} MiB, after upload {after_upload / 1024:.1f} MiB"
    )
    print(f"emulator peak RSS (VmHWM) after serving it: {peak / 1024:.1f} MiB (limit {args.limit_mib:.0f})")
    ok = peak / 1024 < args.limit_mib
    print("OK" if ok else "OVER THE LIMIT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
