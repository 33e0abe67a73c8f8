"""
A triggerer full of batches: N triggers in one event loop, each waiting on its own emulator batch.

The parent process starts an emulator (its own process), creates N one-line batches concurrently and
hands their ids to a child process, which runs the triggers the way Airflow's triggerer does (one task per
trigger, created with ``await asyncio.sleep(0)`` between them, each iterating ``trigger.run()`` until its
first event, then closing it) while a ticker coroutine measures event-loop stalls every 10 ms. Before the
measurement the child makes one poll with each client, as a triggerer that has been running has (Airflow
imports its connection machinery on first use). Logging stays as Airflow configures it (INFO).

The emulator answers every API call 50 ms late. Both triggers poll every ``--poll-interval`` seconds
(ours: its floor while a batch validates). Every batch stays ``validating`` until a known instant and
then completes: the emulator clock is moved so that the batches complete spread evenly over the last
poll interval before ``--complete-after`` seconds (so polls meet completions at every phase); the child
compares the instant each event is yielded with that batch's completion time. Client CPU is
``time.process_time()`` of the child less what the ticker and RSS sampler cost on an idle loop; polls
are counted by the emulator; RSS per trigger is (peak VmRSS - VmRSS before the triggers) / N. Stalls are
broken down (CPU wait caused by other processes, garbage collection, the longest single callback) in
the JSON printed on stderr and in the table's notes.

    python -m benchmarks.triggerer --n 1000             # ours and the openai trigger at 1,000
    python -m benchmarks.triggerer --n 1000 5000 --cap 150
    python -m benchmarks.triggerer --n 5000 --openai-n  # ours and the bare aiohttp poller only
    python -m benchmarks.triggerer --n 1000 --openai-n --bare-n  # ours only
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from benchmarks._common import (
    API_KEY,
    BATCH_PATHS,
    CallbackTimer,
    Emulator,
    Row,
    RssSampler,
    StallTicker,
    arg_parser,
    bench_env,
    connection_env,
    emit,
    emulator_process,
    harness_cpu_rate,
    proc_status,
    report,
    run_child,
)

LATENCY = 0.05
# The openai trigger holds the loop for each poll's round trip: at 1,000 triggers a round of polls takes
# ~55 s, at 5,000 ~275 s. 1,000 is the largest N it runs in a reasonable time.
OPENAI_MAX_N = 1000
GROUPS = 20
# Batches validate for an hour of emulator time; the child moves the clock so that they end on cue.
VALIDATION_SECONDS = 3600.0
LINES_PER_SECOND = 1000.0
FINALIZING_SECONDS = 0.0
INPUT_LINE = {
    "custom_id": "req-1",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
}


async def _create_batches(emu: Emulator, n: int, spread: float) -> list[tuple[str, float]]:
    """
    Upload one input file and create ``n`` batches on it, in ``GROUPS`` groups; between groups the emulator
    clock moves ``spread / GROUPS`` forward, so that the batches complete spread evenly over ``spread``
    seconds (and the triggers' polls meet them at every phase). Returns (id, emulator created_at) each.
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", json.dumps(INPUT_LINE) + "\n", filename="in.jsonl")
        async with session.post(f"{emu.api_url}/files", data=form) as resp:
            resp.raise_for_status()
            file_id = (await resp.json())["id"]
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        out: list[tuple[str, float]] = []

        async def worker(todo: Iterator[int], offset: float) -> None:
            for _ in todo:
                sent = time.time()
                async with session.post(f"{emu.api_url}/batches", json=body) as resp:
                    resp.raise_for_status()
                    batch_id = (await resp.json())["id"]
                # The emulator stamps created_at while it handles the call: between sent and now.
                out.append((batch_id, offset + (sent + time.time()) / 2))

        offset = emu.admin.now() - time.time()
        for group in range(GROUPS):
            todo = iter(range(group * n // GROUPS, (group + 1) * n // GROUPS))
            await asyncio.gather(*(worker(todo, offset) for _ in range(32)))
            offset = emu.admin.advance_clock(spread / GROUPS) - time.time()
        return out


def measure(
    impl: str, n: int, poll_interval: float, complete_after: float, cap: float, gc_freeze: bool = False
) -> dict[str, Any]:
    """Set up an emulator with ``n`` batches and run ``n`` triggers of ``impl`` in a child process."""
    flags = [
        "--validation-seconds",
        str(VALIDATION_SECONDS),
        "--lines-per-second",
        str(LINES_PER_SECOND),
        "--finalizing-seconds",
        str(FINALIZING_SECONDS),
    ]
    with emulator_process(*flags) as emu, tempfile.TemporaryDirectory(prefix="mka1-bench-") as tmp:
        t0 = time.monotonic()
        batches = asyncio.run(_create_batches(emu, n, spread=poll_interval))
        setup_seconds = time.monotonic() - t0
        ids_file = os.path.join(tmp, "batches.json")
        with open(ids_file, "w", encoding="utf-8") as fh:
            json.dump(batches, fh)
        emu.admin.set_latency(LATENCY)
        emu.admin.reset_calls()
        cpu0 = emu.cpu_seconds()
        child_args = [
            *(["--gc-freeze"] if gc_freeze else []),
            "--child",
            impl,
            "--ids-file",
            ids_file,
            "--admin-url",
            emu.base_url,
            "--poll-interval",
            str(poll_interval),
            "--complete-after",
            str(complete_after),
            "--cap",
            str(cap),
        ]
        env = bench_env(**connection_env(emu.base_url))
        result = run_child("benchmarks.triggerer", child_args, env, timeout=cap + 300)
        result["polls"] = emu.admin.calls(method="GET", path=BATCH_PATHS)
        result["emulator_cpu_seconds"] = emu.cpu_seconds() - cpu0
        result["setup_seconds"] = setup_seconds
    polls = result["polls"]
    # The ticker and the RSS sampler cost a little CPU of their own: measured on an idle loop, subtracted.
    cpu = result["cpu_seconds"] - result["harness_cpu_seconds"]
    result["cpu_per_1000_polls"] = cpu / polls * 1000 if polls else float("nan")
    return result


def _make_trigger(impl: str, batch_id: str, poll_interval: float, api_url: str = "") -> Any:
    if impl == "bare":
        from benchmarks.bare_poller import BarePoller

        return BarePoller(api_url, batch_id, poll_interval)
    if impl == "ours":
        from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger

        return MKA1BatchTrigger(batch_id=batch_id, poll_interval=poll_interval)
    from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger

    return OpenAIBatchTrigger(
        conn_id="openai_default", batch_id=batch_id, poll_interval=poll_interval, timeout=86400
    )


async def _warm_up(impl: str, batch_id: str, api_url: str) -> None:
    if impl == "bare":
        # The triggerer's process has Airflow imported, whatever its triggers are.
        import airflow.triggers.base  # noqa: F401

        await _make_trigger(impl, batch_id, 1.0, api_url).poll()
    elif impl == "ours":
        from airflow_provider_batches.hooks.mka1 import MKA1Hook

        await MKA1Hook().aget_batch(batch_id)
    else:
        from airflow.providers.openai.hooks.openai import OpenAIHook

        OpenAIHook().get_batch(batch_id)


async def _run_one(trigger: Any) -> tuple[float, str]:
    """What the triggerer does with one trigger: iterate ``run()`` until its first event, then close it."""
    events = trigger.run()
    try:
        event = await events.__anext__()
        return time.time(), str(event.payload.get("status"))
    finally:
        await events.aclose()


async def _child_main(args: argparse.Namespace, batches: list[tuple[str, float]]) -> dict[str, Any]:
    from airflow_provider_batches.emulator import EmulatorAdmin

    admin = EmulatorAdmin(args.admin_url)
    # One poll before the measurement, as in a triggerer that has been running: it imports what the first
    # poll of a fresh process imports (Airflow loads its connection and supervisor modules on first use).
    api_url = args.admin_url + "/api/v1/llm"
    _make_trigger(args.impl, batches[0][0], args.poll_interval, api_url)
    cold = time.perf_counter()
    await _warm_up(args.impl, batches[0][0], api_url)
    cold = time.perf_counter() - cold
    admin.reset_calls()
    harness_rate = await harness_cpu_rate()
    gc.collect()
    if args.gc_freeze:
        gc.freeze()
    base_rss = proc_status()["VmRSS"]

    # Move the emulator clock so that the last batch completes `complete_after` seconds from now.
    done_after = VALIDATION_SECONDS + 1 / LINES_PER_SECOND + FINALIZING_SECONDS
    offset = admin.now() - time.time()
    advance = max(c for _, c in batches) + done_after - time.time() - offset - args.complete_after
    offset = admin.advance_clock(advance) - time.time()
    completes = {b: c + done_after - offset for b, c in batches}

    ticker, sampler = StallTicker(0.01), RssSampler()
    callbacks = CallbackTimer(ticker)
    callbacks.install()
    ticker.start()
    sampler.start()
    cpu0, wall0 = time.process_time(), time.monotonic()
    tasks: dict[str, asyncio.Task[tuple[float, str]]] = {}
    for batch_id, _ in batches:
        await asyncio.sleep(0)
        trigger = _make_trigger(args.impl, batch_id, args.poll_interval, api_url)
        await asyncio.sleep(0)
        tasks[batch_id] = asyncio.create_task(_run_one(trigger))
    _, pending = await asyncio.wait(tasks.values(), timeout=max(0.0, wall0 + args.cap - time.monotonic()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await ticker.stop()
    await sampler.stop()
    callbacks.uninstall()

    delays: list[float] = []
    statuses: dict[str, int] = {}
    for batch_id, task in tasks.items():
        if task.cancelled() or task.exception() is not None:
            continue
        at, status = task.result()
        statuses[status] = statuses.get(status, 0) + 1
        delays.append(at - completes[batch_id])
    return {
        "impl": args.impl,
        "n": len(batches),
        "events": len(delays),
        "statuses": statuses,
        "capped": bool(pending),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "harness_cpu_seconds": harness_rate * wall,
        **ticker.summary(),
        "longest_callback": callbacks.longest,
        "longest_callback_name": callbacks.longest_name,
        "cold_first_poll": cold,
        "rss_base_kib": base_rss,
        "rss_peak_kib": sampler.peak_kib,
        "peak_open_fds": sampler.peak_fds,
        "rss_per_trigger_kib": (sampler.peak_kib - base_rss) / len(batches),
        "delay_median": statistics.median(delays) if delays else float("nan"),
        "delay_max": max(delays, default=float("nan")),
        "delay_min": min(delays, default=float("nan")),
    }


# (metric, unit, result key, scale)
METRICS = (
    ("worst loop stall", "ms", "worst_stall", 1e3),
    ("p99 loop stall", "ms", "p99_stall", 1e3),
    ("longest single callback, GC excluded", "ms", "longest_callback", 1e3),
    ("worst full garbage collection", "ms", "worst_full_gc", 1e3),
    ("client CPU per 1,000 polls", "s", "cpu_per_1000_polls", 1.0),
    ("RSS per trigger", "KiB", "rss_per_trigger_kib", 1.0),
    ("completion-to-event delay, median", "s", "delay_median", 1.0),
    ("completion-to-event delay, max", "s", "delay_max", 1.0),
)


def rows(ours: dict[int, dict[str, Any]], other: dict[int, dict[str, Any]]) -> list[Row]:
    """Ours at every N, the openai trigger beside it where it ran at the same N; targets where they apply."""
    out: list[Row] = []
    for n in sorted(set(ours) | set(other)):
        r, o = ours.get(n), other.get(n)
        name = f"openai N={n:,}" + (", capped" if o and o["capped"] else "") if o else ""
        for metric, unit, key, scale in METRICS:
            row = Row(
                f"triggerer N={n:,}",
                metric,
                unit,
                r[key] * scale if r else None,
                o[key] * scale if o else None,
                name,
            )
            if r and key == "worst_stall" and o and n == max(other):
                row.target, row.met = ">= 10x less than openai", o[key] >= 10 * r[key]
            elif r and key == "worst_stall" and n == max(ours):
                row.target, row.met = "< 50 ms", r[key] < 0.05
            elif r and key == "rss_per_trigger_kib" and n == max(ours):
                row.target, row.met = "< 30 KB", r[key] * 1.024 < 30
            out.append(row)
        if r and r["worst_stall"] >= 0.05:
            out[-8].note = _stall_note(r)
        for who, res in (("ours", r), ("openai", o)):
            if res and res["events"] < n:
                out[
                    -1
                ].note += f"{who}: {res['events']} of {n} events within the {res['wall_seconds']:.0f} s cap. "
    return out


# (metric, unit, result key, scale) of the comparison with the bare poller; the goal is at most 1.5x it.
BARE_METRICS = (
    ("worst loop stall", "ms", "worst_stall", 1e3),
    ("client CPU per 1,000 polls", "s", "cpu_per_1000_polls", 1.0),
    ("RSS per trigger", "KiB", "rss_per_trigger_kib", 1.0),
)
BARE_GOAL = 1.5


def bare_rows(ours: dict[int, dict[str, Any]], bare: dict[int, dict[str, Any]]) -> list[Row]:
    """Ours against the bare aiohttp poller at every N both ran: the figure, and ours / bare in the note."""
    out: list[Row] = []
    for n in sorted(set(ours) & set(bare)):
        for metric, unit, key, scale in BARE_METRICS:
            mine, base = ours[n][key] * scale, bare[n][key] * scale
            ratio = mine / base if base > 0 else float("inf")
            out.append(
                Row(f"triggerer N={n:,} vs bare", metric, unit, mine, base, f"bare aiohttp N={n:,}",
                    f"<= {BARE_GOAL:g}x bare", ratio <= BARE_GOAL, f"ours / bare = {ratio:.2f}x")
            )  # fmt: skip
    return out


def _stall_note(r: dict[str, Any]) -> str:
    gcs, worst_gc = r["full_gcs"], r["worst_full_gc"] * 1e3
    return (
        f"{gcs} full garbage collections during the run, the worst {worst_gc:.0f} ms wall; the worst tick: "
        f"{r['worst_own_stall'] * 1e3:.0f} ms without CPU wait (other processes), "
        f"{r['worst_loop_stall'] * 1e3:.0f} ms without GC either; no single callback held the loop longer "
        f"than {r['longest_callback'] * 1e3:.0f} ms ({r['longest_callback_name']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser("benchmarks.triggerer", __doc__)
    parser.add_argument("--n", type=int, nargs="*", default=[1000], help="numbers of our triggers")
    parser.add_argument(
        "--openai-n",
        type=int,
        nargs="*",
        help=f"numbers of openai triggers (default: each --n up to {OPENAI_MAX_N:,})",
    )
    parser.add_argument("--poll-interval", type=float, default=10.0, help="of both triggers, seconds")
    parser.add_argument("--complete-after", type=float, default=30.0, help="when the last batch completes")
    parser.add_argument(
        "--cap", type=float, default=180.0, help="seconds before waiting triggers are dropped"
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() the triggerer's startup objects (a what-if)"
    )
    parser.add_argument(
        "--bare-n", type=int, nargs="*", help="numbers of bare aiohttp pollers (default: each --n)"
    )
    parser.add_argument("--child", choices=("ours", "openai", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    parser.add_argument("--admin-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.impl = args.child
        with open(args.ids_file, encoding="utf-8") as fh:
            batches = [tuple(b) for b in json.load(fh)]
        emit(asyncio.run(_child_main(args, batches)))
        return 0

    if args.openai_n is None:
        args.openai_n = [n for n in args.n if n <= OPENAI_MAX_N]
    if args.bare_n is None:
        args.bare_n = list(args.n)
    results: dict[str, dict[int, dict[str, Any]]] = {"ours": {}, "openai": {}, "bare": {}}
    for impl, ns in (("ours", args.n), ("bare", args.bare_n), ("openai", args.openai_n)):
        for n in sorted(set(ns)):
            results[impl][n] = measure(
                impl, n, args.poll_interval, args.complete_after, args.cap, args.gc_freeze
            )
            print(f"{impl} N={n}: {json.dumps(results[impl][n])}", file=sys.stderr)
    report(rows(results["ours"], results["openai"]) + bare_rows(results["ours"], results["bare"]), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
