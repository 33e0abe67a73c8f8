"""
Streamed download: a 1 GiB file from the emulator to local disk, ``MKA1Hook.download_file`` vs ``curl -o``.

A generated 1 GiB JSONL file (valid batch request lines) is uploaded with ``purpose=batch``; both
clients then download its content (``GET /files/{id}/content``, same URL, same headers) into /tmp, in
alternating rounds. The hook runs in a fresh child process that measures its own throughput and its peak
RSS growth (VmHWM, reset just before the download, minus VmRSS before it); curl's time is its own
``time_total``. The figures are medians over the rounds. All big files are deleted afterwards.

    python -m benchmarks.download --size-mib 1024 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._common import (
    API_KEY,
    Row,
    arg_parser,
    bench_env,
    connection_env,
    emit,
    emulator_process,
    proc_status,
    report,
    reset_peak_rss,
    run_child,
)

MIB = 1 << 20
LINE_BYTES = 1024


def make_jsonl(path: str, size: int) -> None:
    """Write ``size`` bytes of batch request lines, each exactly ``LINE_BYTES`` long."""
    head = (
        '{"custom_id":"req-%09d","method":"POST","url":"/v1/chat/completions",'
        '"body":{"model":"m","messages":[{"role":"user","content":"'
    )
    tail = '"}]}}\n'
    pad = LINE_BYTES - len(head % 0) - len(tail)
    template = (head + "x" * pad + tail).encode()
    lines_per_chunk = 1024
    with open(path, "wb") as fh:
        for start in range(0, size // LINE_BYTES, lines_per_chunk):
            count = min(lines_per_chunk, size // LINE_BYTES - start)
            fh.write(b"".join(template % (start + i) for i in range(count)))


def upload(base_url: str, path: str) -> str:
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-H", f"Authorization: Bearer {API_KEY}", "-F", "purpose=batch",
         "-F", f"file=@{path};filename=big.jsonl", f"{base_url}/api/v1/llm/files"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return str(json.loads(out.stdout)["id"])


def curl_download(base_url: str, file_id: str, dest: str) -> dict[str, float]:
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", dest, "-H", f"Authorization: Bearer {API_KEY}",
         "-w", "%{size_download} %{time_total}", f"{base_url}/api/v1/llm/files/{file_id}/content"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    size, seconds = out.stdout.split()
    return {"bytes": float(size), "seconds": float(seconds)}


def _child(file_id: str, dest: str) -> dict[str, Any]:
    """In a fresh process: download with the hook; time and peak RSS growth."""
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

    hook = MKA1Hook()
    hook.get_file(file_id)  # the session and connection exist before the measurement, as in a task
    # Time (not change) the hook's fsync: curl -o does not sync, so its share is reported apart.
    fsync, synced = os.fsync, [0.0]

    def timed_fsync(fd: Any) -> None:
        started = time.perf_counter()
        fsync(fd)
        synced[0] += time.perf_counter() - started

    os.fsync = timed_fsync
    exact_peak = reset_peak_rss()
    before = proc_status()["VmRSS"]
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = hook.download_file(file_id, dest)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    status = proc_status()
    return {
        "bytes": os.path.getsize(dest),
        "reported_bytes": getattr(result, "bytes", None),
        "seconds": seconds,
        "fsync_seconds": synced[0],
        "cpu_seconds": cpu,
        "rss_growth_kib": status["VmHWM"] - before,
        "exact_peak": exact_peak,
    }


def measure(size_mib: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mka1-bench-download-", dir="/tmp") as tmp:
        src, dest = os.path.join(tmp, "big.jsonl"), os.path.join(tmp, "out.jsonl")
        make_jsonl(src, size_mib * MIB)
        size = os.path.getsize(src)
        with emulator_process("--data-dir", os.path.join(tmp, "emulator")) as emu:
            file_id = upload(emu.base_url, src)
            os.unlink(src)
            env = bench_env(**connection_env(emu.base_url))
            ours, curl = [], []
            for _ in range(rounds):
                curl.append(curl_download(emu.base_url, file_id, dest))
                os.unlink(dest)
                ours.append(run_child("benchmarks.download", ["--child", file_id, dest], env, timeout=900))
                if ours[-1]["bytes"] != size:
                    raise RuntimeError(f"hook wrote {ours[-1]['bytes']} bytes, expected {size}")
                os.unlink(dest)
    return {"size": size, "ours": ours, "curl": curl}


def rows(result: dict[str, Any]) -> list[Row]:
    def mib_s(r: dict[str, float], less: float = 0.0) -> float:
        return r["bytes"] / (r["seconds"] - less) / MIB

    ours = statistics.median(mib_s(r) for r in result["ours"])
    unsynced = statistics.median(mib_s(r, r.get("fsync_seconds", 0.0)) for r in result["ours"])
    curl = statistics.median(mib_s(r) for r in result["curl"])
    growth = max(r["rss_growth_kib"] for r in result["ours"]) / 1024
    b = f"download {result['size'] / MIB:,.0f} MiB"
    share = ours / curl
    note = (
        f"median of {len(result['ours'])} rounds; ours/curl = {share:.3f}. The hook fsyncs the file before "
        f"moving it into place (curl -o does not): without that fsync ours is {unsynced:,.0f} MiB/s "
        f"({unsynced / curl:.2f} of curl); the hook's process was on a CPU "
        f"{statistics.median(r['cpu_seconds'] / r['seconds'] for r in result['ours']):.0%} of the time"
    )
    if not all(r["exact_peak"] for r in result["ours"]):
        note += "; VmHWM could not be reset, peak growth is an upper bound"
    return [
        Row(b, "throughput", "MiB/s", ours, curl, "curl -o", ">= 0.7 of curl", share >= 0.7, note),
        Row(b, "peak RSS growth (worst round)", "MiB", growth, None, "", "< 64 MB", growth * 1.048576 < 64),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser("benchmarks.download", __doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("FILE_ID", "DEST"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        emit(_child(*args.child))
        return 0
    result = measure(args.size_mib, args.rounds)
    print(json.dumps(result), file=sys.stderr)
    report(rows(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
