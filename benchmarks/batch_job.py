"""
A batch job of N chat requests through the emulator: peak RSS, stage throughput against ``cp``, API calls.

For each size, a JSONL file of N request lines (about 300 bytes each) is generated; a fresh child
process runs ``MKA1BatchJobOperator`` on it (``max_requests_per_batch=50,000``, waiting on the worker)
against an emulator in its own process, and measures its peak RSS growth (VmHWM, reset once the
operator is built, minus VmRSS then) and the time of each stage: splitting (read, check, index and
shard the input), uploading the shards, waiting, collecting (downloading and indexing the results)
and merging (writing the results file). Each stage's throughput is compared with ``cp`` of the same
bytes on the same disk, timed in the same run. The emulator counts the API calls. With
``--transient-share 0.01`` a second job has 1% of its lines failing transiently once: every row must
end answered after one resubmission round, with exactly the expected number of batches created.

    python -m benchmarks.batch_job --requests 100000 1000000 --transient-requests 100000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._common import (
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

MB = 1_000_000
PER_BATCH = 50_000
STAGES = ("split", "upload", "wait", "collect", "merge")


def make_requests(path: str, count: int, transient_every: int = 0) -> int:
    """Write ``count`` chat request lines; every ``transient_every``-th fails once (0: none)."""
    head = (
        '{"custom_id":"req-%08d","method":"POST","url":"/v1/chat/completions","body":{"model":"mka1-small",'
    )
    text = (
        '"messages":[{"role":"user","content":"Question %08d: what is the capital of the country with the '
        'code XX? Answer in one word, please, and nothing else at all."}]'
    )
    fail = ',"emulator_fail":{"code":"server_error","message":"busy","times":1}'
    with open(path, "w", encoding="ascii") as fh:
        for n in range(count):
            flaky = transient_every and n % transient_every == transient_every // 2
            fh.write(head % n + text % n + (fail if flaky else "") + "}}\n")
    return os.path.getsize(path)


def _timed(owner: Any, name: str, stage: str, seconds: dict[str, float], cpu: dict[str, float]) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - started
            cpu[stage] += time.process_time() - cpu_started

    setattr(owner, name, wrapped)


def _child(requests: str, result_dir: str, scratch: str) -> dict[str, Any]:
    """In a fresh process: run the job, timing its stages and measuring its peak RSS growth."""
    import uuid

    from airflow_provider_batches.hooks.mka1 import MKA1Hook
    from airflow_provider_batches.jobs import run
    from airflow_provider_batches.operators.mka1 import MKA1BatchJobOperator
    from benchmarks._common import quiet_logging

    quiet_logging()
    seconds = dict.fromkeys(STAGES, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)
    _timed(run, "split_input", "split", seconds, cpu)
    _timed(MKA1Hook, "upload_file", "upload", seconds, cpu)
    _timed(run, "collect_batch", "collect", seconds, cpu)
    _timed(run, "write_results", "merge", seconds, cpu)
    _timed(run, "split_resubmission", "split", seconds, cpu)

    class TI:
        dag_id, task_id, map_index, try_number = "bench", "job", -1, 1
        run_id = f"bench__{uuid.uuid4().hex}"

        def xcom_push(self, key: str, value: Any, **_: Any) -> None:
            pass

    op = MKA1BatchJobOperator(
        task_id="job",
        requests=requests,
        result_path=result_dir,
        scratch_dir=scratch,
        max_requests_per_batch=PER_BATCH,
        resubmit_rounds=2,
        poll_interval=0.5,
        max_poll_interval=2,
    )
    exact = reset_peak_rss()
    before = proc_status()["VmRSS"]
    started = time.perf_counter()
    manifest = op.execute({"ti": TI(), "task_instance": TI(), "run_id": TI.run_id})
    total = time.perf_counter() - started
    # The rest: listing, creating, waiting (the emulator's own work on the lines) and polling.
    seconds["wait"] = total - sum(v for k, v in seconds.items() if k != "wait")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "total_seconds": total,
        "rss_growth_kib": proc_status()["VmHWM"] - before,
        "exact_peak": exact,
        "manifest": {k: manifest[k] for k in ("counts", "rounds", "batches", "usage")},
        "results_bytes": os.path.getsize(os.path.join(result_dir, "results.jsonl")),
    }


def _cp_seconds(source: str, target: str) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", source, target], check=True)
    seconds = time.perf_counter() - started
    os.unlink(target)
    return seconds


def measure(count: int, transient_share: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mka1-bench-job-", dir="/tmp") as tmp:
        source = os.path.join(tmp, "requests.jsonl")
        every = round(1 / transient_share) if transient_share else 0
        size = make_requests(source, count, every)
        flags = ("--validation-seconds", "0", "--lines-per-second", "1000000000", "--finalizing-seconds", "0")
        with emulator_process("--data-dir", os.path.join(tmp, "emulator"), *flags) as emu:
            env = bench_env(**connection_env(emu.base_url))
            result_dir, scratch = os.path.join(tmp, "results"), os.path.join(tmp, "scratch")
            child = run_child(
                "benchmarks.batch_job", ["--child", source, result_dir, scratch], env, timeout=7200
            )
            calls = {
                "total": emu.admin.calls(),
                "create": emu.admin.calls(method="POST", path="/api/v1/llm/batches"),
                "upload": emu.admin.calls(method="POST", path="/api/v1/llm/files"),
                "list": emu.admin.calls(method="GET", path="/api/v1/llm/batches"),
                "get": emu.admin.calls(method="GET", path="/api/v1/llm/batches/*"),
                "download": emu.admin.calls(method="GET", path="/api/v1/llm/files/*/content"),
            }
        results = os.path.join(result_dir, "results.jsonl")
        cp = {"input": _cp_seconds(source, source + ".cp"), "results": _cp_seconds(results, results + ".cp")}
        with open(results, "rb") as fh:
            rows = [json.loads(line) for line in fh] if count <= 200_000 else None
        answered = sum(1 for r in rows if r["error"] is None) if rows is not None else None
        shutil.rmtree(result_dir, ignore_errors=True)
    return {"count": count, "size": size, "transient_share": transient_share, "child": child, "calls": calls,
            "cp": cp, "answered": answered}  # fmt: skip


def rows(results: list[dict[str, Any]]) -> list[Row]:
    out: list[Row] = []
    for r in results:
        child, n, size = r["child"], r["count"], r["size"]
        b = f"job, {n:,} requests ({size / MB:,.0f} MB)"
        if r["transient_share"]:
            b += f", {r['transient_share']:.0%} transient once"
        growth = child["rss_growth_kib"] / 1024
        out.append(Row(b, "peak RSS growth", "MiB", growth, None, "", "< 100 MB", growth * 1.048576 < 100))
        cp_mb_s = size / r["cp"]["input"] / MB
        for stage, nbytes, cp_bytes_s in (
            ("split", size, cp_mb_s),
            ("upload", size, cp_mb_s),
            ("collect", child["results_bytes"], child["results_bytes"] / r["cp"]["results"] / MB),
            ("merge", child["results_bytes"], child["results_bytes"] / r["cp"]["results"] / MB),
        ):
            ours = nbytes / child["seconds"][stage] / MB
            busy = child["cpu_seconds"][stage]
            on_cpu = f"{busy:.1f} s on a CPU ({nbytes / busy / MB:,.0f} MB/s)"
            note = f"{child['seconds'][stage]:.1f} s, of which {on_cpu}"
            out.append(Row(b, f"{stage} throughput", "MB/s", ours, cp_bytes_s, "cp", ">= 0.5 of cp",
                           ours / cp_bytes_s >= 0.5, note))  # fmt: skip
        counts, manifest = child["manifest"]["counts"], child["manifest"]
        expected_batches = math.ceil(n / PER_BATCH)
        resent = counts["resubmitted"]
        if resent:
            expected_batches += math.ceil(resent / PER_BATCH)
        calls = r["calls"]
        note = (
            f"{calls['create']} batches created ({expected_batches} expected), {calls['upload']} uploads, "
            f"{calls['list']} list pages, {calls['get']} batch polls, {calls['download']} downloads; "
            f"rounds {manifest['rounds']}, succeeded {counts['succeeded']:,} of {counts['requests']:,}, "
            f"resubmitted {resent:,}; wait {child['seconds']['wait']:.1f} s, "
            f"total {child['total_seconds']:.1f} s"
        )
        every_row = counts["succeeded"] == n
        target = "every row answered, batches as expected"
        met = every_row and calls["create"] == expected_batches
        out.append(Row(b, "API calls", "", calls["total"], None, "", target, met, note))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser("benchmarks.batch_job", __doc__)
    parser.add_argument("--requests", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--transient-requests", type=int, default=100_000, help="size of the 1%% job (0: skip)"
    )
    parser.add_argument("--transient-share", type=float, default=0.01)
    parser.add_argument(
        "--child", nargs=3, metavar=("REQUESTS", "RESULTS", "SCRATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        emit(_child(*args.child))
        return 0
    results = [measure(n, 0.0) for n in args.requests]
    if args.transient_requests:
        results.append(measure(args.transient_requests, args.transient_share))
    print(json.dumps(results), file=sys.stderr)
    report(rows(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
