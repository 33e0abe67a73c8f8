"""
What one waiting trigger costs its triggerer: RSS and the objects a full garbage collection walks.

N triggers wait (each has made its first poll and sleeps until the next) on batches that stay
``validating``, in one event loop as the triggerer runs them; the child process counts the objects the
garbage collector tracks (``len(gc.get_objects())`` after a full collection) and VmRSS, before the
triggers and once all of them have polled, and divides the growth by N.

    python -m benchmarks.per_trigger --n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from benchmarks._common import (
    BATCH_PATHS,
    Row,
    arg_parser,
    bench_env,
    connection_env,
    emit,
    emulator_process,
    proc_status,
    report,
    run_child,
)
from benchmarks.triggerer import _create_batches


def measure(n: int) -> dict[str, Any]:
    """Create ``n`` batches that stay validating, and measure ``n`` triggers waiting on them."""
    with (
        emulator_process("--validation-seconds", "86000") as emu,
        tempfile.TemporaryDirectory(prefix="mka1-per-trigger-") as tmp,
    ):
        batches = asyncio.run(_create_batches(emu, n, spread=0.0))
        ids_file = os.path.join(tmp, "batches.json")
        with open(ids_file, "w", encoding="utf-8") as fh:
            json.dump([b for b, _ in batches], fh)
        env = bench_env(**connection_env(emu.base_url))
        args = ["--child", "--ids-file", ids_file, "--admin-url", emu.base_url]
        return run_child("benchmarks.per_trigger", args, env, timeout=600)


def _tracked() -> Counter[str]:
    """The objects the garbage collector tracks, by type, after a full collection."""
    gc.collect()
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


async def _child_main(batch_ids: list[str], admin_url: str) -> dict[str, Any]:
    from airflow_provider_batches.emulator import EmulatorAdmin
    from airflow_provider_batches.hooks.mka1 import MKA1Hook
    from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger

    admin = EmulatorAdmin(admin_url)
    warm = MKA1Hook()  # a triggerer that has been running has imported what a first poll imports
    await warm.aget_batch(batch_ids[0])
    await warm.aclose()
    objects0, rss0 = _tracked(), proc_status()["VmRSS"]
    admin.reset_calls()
    runs = [MKA1BatchTrigger(batch_id=b, poll_interval=3600, max_poll_interval=3600).run() for b in batch_ids]
    tasks = [asyncio.create_task(run.__anext__()) for run in runs]  # type: ignore[arg-type]
    deadline = time.monotonic() + 300
    while await asyncio.to_thread(admin.calls, "GET", BATCH_PATHS) < len(batch_ids):
        assert time.monotonic() < deadline, "the triggers did not all poll"
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # every poll's answer handled: each trigger sleeps until its next poll
    objects, rss = _tracked(), proc_status()["VmRSS"]
    growth = {kind: count - objects0[kind] for kind, count in objects.items()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for run in runs:
        await run.aclose()
    n = len(batch_ids)
    by_type = sorted(((round(c / n, 2), k) for k, c in growth.items() if c >= n / 2), reverse=True)
    return {
        "n": n,
        "objects_per_trigger": (objects.total() - objects0.total()) / n,
        "rss_per_trigger_kib": (rss - rss0) / n,
        "objects_per_trigger_by_type": by_type,
    }


def rows(result: dict[str, Any]) -> list[Row]:
    bench = f"one waiting trigger (N={result['n']:,})"
    return [
        Row(bench, "objects a full garbage collection walks", "", result["objects_per_trigger"]),
        Row(bench, "RSS", "KiB", result["rss_per_trigger_kib"]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser("benchmarks.per_trigger", __doc__)
    parser.add_argument("--n", type=int, default=2000, help="waiting triggers")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    parser.add_argument("--admin-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        with open(args.ids_file, encoding="utf-8") as fh:
            emit(asyncio.run(_child_main(json.load(fh), args.admin_url)))
        return 0
    result = measure(args.n)
    print(f"per_trigger {json.dumps(result)}", file=sys.stderr)
    report(rows(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
