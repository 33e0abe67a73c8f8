"""
A fleet of waits on one rate-limited API key: N triggers in one (or two) triggerer processes, one key.

The parent starts the emulator (its own process), creates N one-line batches (no rate limit yet), then
starts the triggerer processes; each imports Airflow and makes one poll, as a triggerer that has been
running has, and says it is ready. Then the parent sets the emulator's per-key rate limit, moves the
emulator clock so that the batches complete spread evenly over the first poll interval, and lets every
process start its share of the triggers the way Airflow's triggerer does (one task per trigger, each
iterating ``trigger.run()`` until its first event). The emulator answers every call 20 ms late.

Per row: the waits that ended ``success`` (and how the others ended), the ``GET /batches/{id}`` calls the
emulator counted (and their ratio to the ones answered 200), the share of calls answered 429 after the
first 10 s, the completion-to-event delay (event yielded minus batch completed) and the worst event-loop
stall of any process (a ticker coroutine, every 10 ms). With two processes, also their combined rate of
calls. The raw figures are printed on stderr as JSON.

    python -m benchmarks.fleet                       # the rows of make bench
    python -m benchmarks.fleet --row 1000 5 2        # one row: waits, limit (req/s), poll interval (s)
    python -m benchmarks.fleet --row 1000 10 2 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from benchmarks._common import (
    BATCH_PATHS,
    REPO,
    RESULT_MARK,
    Row,
    StallTicker,
    arg_parser,
    bench_env,
    connection_env,
    emit,
    emulator_process,
    report,
)
from benchmarks.triggerer import (
    FINALIZING_SECONDS,
    LINES_PER_SECOND,
    VALIDATION_SECONDS,
    _create_batches,
)

LATENCY = 0.02
# (waits, the key's limit in requests per second, poll interval in seconds, triggerer processes)
ROWS: list[tuple[int, float, float, int]] = [
    (300, 10, 2, 1),
    (1000, 20, 10, 1),
    (1000, 5, 2, 1),
    (5000, 20, 10, 1),
    (1000, 10, 2, 2),
]
# Rate-limited calls in the first seconds are how a lane learns the limit; the goal counts after them.
LEARNING_SECONDS = 10.0
READY, GO = "FLEET-READY", "GO"


class _CountSampler(threading.Thread):
    """Samples the emulator's counts of GET /batches/{id} calls (all, and answered 429) every 0.5 s."""

    def __init__(self, admin: Any) -> None:
        super().__init__(daemon=True)
        self.admin = admin
        self.samples: list[tuple[float, int, int]] = []
        self._done = threading.Event()

    def sample(self) -> None:
        at = time.time()
        calls = self.admin.calls(method="GET", path=BATCH_PATHS)
        limited = self.admin.calls(method="GET", path=BATCH_PATHS, status=429)
        self.samples.append((at, calls, limited))

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.sample()

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.sample()

    def at(self, when: float) -> tuple[int, int]:
        """The counts of the last sample taken at or before ``when``."""
        before = [s for s in self.samples if s[0] <= when] or [(when, 0, 0)]
        return before[-1][1], before[-1][2]


def measure(n: int, limit: float, poll_interval: float, processes: int, cap: float) -> dict[str, Any]:
    """One row: ``n`` waits over ``processes`` triggerer processes on one key limited to ``limit`` req/s."""
    flags = [
        "--validation-seconds",
        str(VALIDATION_SECONDS),
        "--lines-per-second",
        str(LINES_PER_SECOND),
        "--finalizing-seconds",
        str(FINALIZING_SECONDS),
    ]
    with emulator_process(*flags) as emu, tempfile.TemporaryDirectory(prefix="mka1-fleet-") as tmp:
        batches = asyncio.run(_create_batches(emu, n, spread=poll_interval))
        env = bench_env(**connection_env(emu.base_url))
        children = []
        for index in range(processes):
            ids_file = os.path.join(tmp, f"batches-{index}.json")
            with open(ids_file, "w", encoding="utf-8") as fh:
                json.dump([b for b, _ in batches[index::processes]], fh)
            log = open(os.path.join(tmp, f"child-{index}.log"), "w+", encoding="utf-8")  # noqa: SIM115
            args = [
                "--child",
                "--ids-file",
                ids_file,
                "--poll-interval",
                str(poll_interval),
                "--cap",
                str(cap),
            ]
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.fleet", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=REPO,
            )
            children.append(_Child(proc, log))
        try:
            for child in children:
                child.read_until(READY, timeout=300)
            emu.admin.set_latency(LATENCY)
            emu.admin.set_rate_limit(limit)
            emu.admin.reset_calls()
            # The last batch completes one poll interval from now; the others spread evenly before it.
            done_after = VALIDATION_SECONDS + 1 / LINES_PER_SECOND + FINALIZING_SECONDS
            offset = emu.admin.now() - time.time()
            advance = max(c for _, c in batches) + done_after - time.time() - offset - poll_interval
            offset = emu.admin.advance_clock(advance) - time.time()
            completes = {b: c + done_after - offset for b, c in batches}
            sampler = _CountSampler(emu.admin)
            started = time.time()
            for child in children:
                assert child.proc.stdin is not None
                child.proc.stdin.write(GO + "\n")
                child.proc.stdin.flush()
            sampler.start()
            results = [child.result(cap + 120) for child in children]
            sampler.stop()
            ok200 = emu.admin.calls(method="GET", path=BATCH_PATHS, status=200)
        finally:
            for child in children:
                if child.proc.poll() is None:
                    child.proc.kill()
                child.proc.wait()
                child.log.close()
    return _summary(n, limit, poll_interval, processes, started, completes, results, sampler, ok200)


class _Child:
    """A triggerer process and a thread that reads its stdout as it comes (a full pipe would block it)."""

    def __init__(self, proc: subprocess.Popen[str], log: Any) -> None:
        self.proc, self.log = proc, log
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith((READY, RESULT_MARK)):
                self.lines.put(line)
        self.lines.put(None)

    def read_until(self, mark: str, timeout: float) -> str:
        while (line := self.lines.get(timeout=timeout)) is not None:
            if line.startswith(mark):
                return line[len(mark) :].strip()
        self.log.seek(0)
        raise RuntimeError(
            f"fleet child exited ({self.proc.wait()}) before {mark}:\n{self.log.read()[-3000:]}"
        )

    def result(self, timeout: float) -> dict[str, Any]:
        result = json.loads(self.read_until(RESULT_MARK, timeout))
        self.proc.wait(timeout=60)
        return dict(result)


def _summary(
    n: int,
    limit: float,
    poll_interval: float,
    processes: int,
    started: float,
    completes: dict[str, float],
    results: list[dict[str, Any]],
    sampler: _CountSampler,
    ok200: int,
) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    delays: list[float] = []
    last_event = started
    for result in results:
        for batch_id, (at, status) in result["events"].items():
            statuses[status] = statuses.get(status, 0) + 1
            last_event = max(last_event, at)
            if status == "success":
                delays.append(at - completes[batch_id])
    calls, limited = sampler.at(float("inf"))
    early_calls, early_limited = sampler.at(started + LEARNING_SECONDS)
    late_calls = calls - early_calls
    busy = max(last_event - started, 1e-9)
    return {
        "n": n,
        "limit": limit,
        "poll_interval": poll_interval,
        "processes": processes,
        "statuses": statuses,
        "success": statuses.get("success", 0),
        "unfinished": n - sum(statuses.values()),
        "get_calls": calls,
        "get_200": ok200,
        "calls_per_success": calls / ok200 if ok200 else float("nan"),
        "limited_calls": limited,
        "limited_share_after_learning": (limited - early_limited) / late_calls if late_calls else 0.0,
        "calls_per_second": calls / busy,
        "busy_seconds": busy,
        "delay_median": statistics.median(delays) if delays else float("nan"),
        "delay_max": max(delays, default=float("nan")),
        "delay_goal": n / limit + poll_interval,
        "worst_stall": max(r["worst_stall"] for r in results),
        "worst_full_gc": max(r["worst_full_gc"] for r in results),
        "wall_seconds": max(r["wall_seconds"] for r in results),
    }


async def _child_main(args: argparse.Namespace, batch_ids: list[str]) -> dict[str, Any]:
    from airflow_provider_batches.hooks.mka1 import MKA1Hook
    from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger
    from benchmarks.triggerer import _run_one

    # One poll before the measurement, as in a triggerer that has been running (Airflow imports its
    # connection machinery on first use).
    warm = MKA1Hook()
    await warm.aget_batch(batch_ids[0])
    await warm.aclose()
    print(READY, flush=True)
    await asyncio.to_thread(sys.stdin.readline)

    ticker = StallTicker(0.01)
    ticker.start()
    wall0 = time.monotonic()
    tasks: dict[str, asyncio.Task[tuple[float, str]]] = {}
    for batch_id in batch_ids:
        await asyncio.sleep(0)
        trigger = MKA1BatchTrigger(batch_id=batch_id, poll_interval=args.poll_interval)
        await asyncio.sleep(0)
        tasks[batch_id] = asyncio.create_task(_run_one(trigger))
    _, pending = await asyncio.wait(tasks.values(), timeout=args.cap)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.monotonic() - wall0
    await ticker.stop()
    events = {
        batch_id: task.result()
        for batch_id, task in tasks.items()
        if not task.cancelled() and task.exception() is None
    }
    return {"events": events, "wall_seconds": wall, **ticker.summary()}


def rows(results: list[dict[str, Any]]) -> list[Row]:
    """Per measured row: success, GET calls, 429 share, delay and stall, each against its goal."""
    out: list[Row] = []
    for r in results:
        where = f" x {r['processes']} processes" if r["processes"] > 1 else ""
        bench = f"fleet {r['n']:,} waits{where}, {r['limit']:g} req/s, poll {r['poll_interval']:g} s"
        ended = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        if r["unfinished"]:
            ended += f", still waiting at the cap: {r['unfinished']}"
        out += [
            Row(bench, "waits that ended success", "", r["success"], target=f"all {r['n']:,}",
                met=r["success"] == r["n"], note=ended),
            Row(bench, "GET calls / answered 200", "x", r["calls_per_success"], target="<= 1.5x",
                met=r["calls_per_success"] <= 1.5,
                note=f"{r['get_calls']:,} GET calls ({r['get_calls'] / r['n']:.2f} per wait), "
                f"{r['get_200']:,} answered 200, {r['limited_calls']:,} answered 429"),
            Row(bench, f"429s after the first {LEARNING_SECONDS:g} s, share of calls", "%",
                r["limited_share_after_learning"] * 100, target="< 5%",
                met=r["limited_share_after_learning"] < 0.05),
            Row(bench, "completion-to-event delay, median", "s", r["delay_median"]),
            Row(bench, "completion-to-event delay, max", "s", r["delay_max"],
                target=f"<= {r['delay_goal']:.0f} s (waits / limit + poll)",
                met=r["delay_max"] <= r["delay_goal"] * 1.1),
            Row(bench, "worst event-loop stall", "ms", r["worst_stall"] * 1e3,
                note=f"worst full garbage collection {r['worst_full_gc'] * 1e3:.0f} ms"),
        ]  # fmt: skip
        if r["processes"] > 1:
            out.append(
                Row(bench, "combined calls per second (429s included)", "req/s", r["calls_per_second"],
                    target=f"<= {r['limit']:g} req/s", met=r["calls_per_second"] <= r["limit"],
                    note=f"answered 200: {r['get_200'] / r['busy_seconds']:.2f} req/s over "
                    f"{r['busy_seconds']:.0f} s")
            )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser("benchmarks.fleet", __doc__)
    parser.add_argument(
        "--row",
        nargs=3,
        type=float,
        action="append",
        metavar=("WAITS", "LIMIT", "POLL"),
        help="run this row instead of the default ones (repeatable)",
    )
    parser.add_argument("--processes", type=int, default=1, help="triggerer processes of --row rows")
    parser.add_argument("--cap", type=float, help="seconds before waiting triggers are dropped")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    parser.add_argument("--poll-interval", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        with open(args.ids_file, encoding="utf-8") as fh:
            batch_ids = json.load(fh)
        emit(asyncio.run(_child_main(args, batch_ids)))
        return 0
    todo = [(int(n), lim, poll, args.processes) for n, lim, poll in args.row] if args.row else ROWS
    results = []
    for n, limit, poll, processes in todo:
        # Room for three times the least a fleet needs (every wait one poll at the limit), and a minute.
        cap = args.cap or 3 * n / limit + 60
        result = measure(n, limit, poll, processes, cap)
        print(f"fleet {json.dumps(result)}", file=sys.stderr, flush=True)
        results.append(result)
    report(rows(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
