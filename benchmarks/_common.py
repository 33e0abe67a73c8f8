"""What the benchmarks share: the emulator in its own process, a stall ticker, CPU and memory probes."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import IO, Any

API_KEY = "bench-key-0d9c4e"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH_PATHS = "/api/v1/llm/batches/*"
RESULT_MARK = "BENCH-RESULT "


@dataclass
class Row:
    """One line of the final table. ``ours``/``other`` are numbers in ``unit``; ``other`` may be missing."""

    benchmark: str
    metric: str
    unit: str
    ours: float | None
    other: float | None = None
    other_name: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.other is None or self.ours == 0:
            return None
        return self.other / self.ours


def arg_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of ``python -m <module>``, with the ``--json`` flag every benchmark has."""
    lines = (doc or "").strip().splitlines()
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=lines[0] if lines else None)
    parser.add_argument(
        "--json", action="store_true", help="print the rows as JSON, for python -m benchmarks"
    )
    return parser


def report(rows: Sequence[Row], as_json: bool) -> None:
    """Print the rows: as a table, or (``--json``, for ``python -m benchmarks``) as a marked JSON line."""
    if as_json:
        emit([asdict(r) for r in rows])
    else:
        print(table(rows))


def load_rows(stdout: str) -> list[Row]:
    found = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    return [Row(**r) for r in json.loads(found[-1][len(RESULT_MARK) :])] if found else []


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: Sequence[Row]) -> str:
    """A plain fixed-width table: ours, the other's figure, other/ours, target, met."""
    head = ("benchmark", "metric", "ours", "other", "other/ours", "target", "met")
    lines = []
    for r in rows:
        other = f"{_fmt(r.other)} ({r.other_name})" if r.other is not None else "-"
        met = {True: "yes", False: "NO", None: ""}[r.met]
        unit = f" {r.unit}" if r.unit else ""
        ratio = f"{r.ratio:.1f}x" if r.ratio is not None else "-"
        lines.append((r.benchmark, r.metric, f"{_fmt(r.ours)}{unit}", other, ratio, r.target, met))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    notes = [f"- {r.benchmark} / {r.metric}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["", *notes] if notes else []))


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM etc. of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Vm"):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _run_queue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (other processes held it)."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class StallTicker:
    """
    Measures how long the event loop is kept from running a ready coroutine.

    Every ``interval`` seconds it asks the loop to wake it; a stall is how late the wake-up comes
    (``loop.time()`` after the sleep minus the time asked for). A loop that is never blocked shows stalls
    of a fraction of a millisecond. To name a stall's cause it also keeps, per tick, the time the thread
    waited for a CPU held by other processes (the kernel's run-queue wait, /proc/thread-self/schedstat)
    and the CPU time of the interpreter's garbage collector: ``own`` stalls subtract the former,
    ``loop`` stalls both (what the event loop's callbacks themselves took).
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.stalls: list[float] = []
        self.own: list[float] = []
        self.loop: list[float] = []
        self.at: list[float] = []
        self.gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_cpu = 0.0
        self.gc_wall = 0.0
        self._gc_started = (0.0, 0.0)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start, waited, collected = loop.time(), _run_queue_wait(), self._gc_cpu
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            now = loop.time()
            stall = max(0.0, now - due)
            # A thread asleep in epoll is not runnable: run-queue wait only grows while it should run.
            before, waited = waited, _run_queue_wait()
            gc_before, collected = collected, self._gc_cpu
            self.stalls.append(stall)
            self.own.append(max(0.0, stall - (waited - before)))
            self.loop.append(max(0.0, stall - (waited - before) - (collected - gc_before)))
            self.at.append(now - start)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = (time.perf_counter(), time.thread_time())
        else:
            wall, cpu = self._gc_started
            self.gc_pauses[info["generation"]].append(time.perf_counter() - wall)
            self.gc_wall += time.perf_counter() - wall
            self._gc_cpu += time.thread_time() - cpu

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def _top(self, values: list[float], count: int = 5) -> list[list[float]]:
        """The ``count`` worst ticks by ``values``: [seconds since start, stall, own, loop] each."""
        worst = sorted(range(len(values)), key=values.__getitem__)[-count:]
        return [[round(x[i], 4) for x in (self.at, self.stalls, self.own, self.loop)] for i in worst]

    def summary(self) -> dict[str, Any]:
        worst = max(range(len(self.stalls)), key=self.stalls.__getitem__, default=None)
        return {
            "worst_stall": self.stalls[worst] if worst is not None else float("nan"),
            "worst_stall_at": self.at[worst] if worst is not None else float("nan"),
            "p99_stall": percentile(self.stalls, 99),
            "worst_own_stall": max(self.own, default=float("nan")),
            "p99_own_stall": percentile(self.own, 99),
            "worst_loop_stall": max(self.loop, default=float("nan")),
            "p99_loop_stall": percentile(self.loop, 99),
            "full_gcs": len(self.gc_pauses[2]),
            "worst_full_gc": max(self.gc_pauses[2], default=0.0),
            "worst_young_gc": max(self.gc_pauses[0] + self.gc_pauses[1], default=0.0),
            "ticks": len(self.stalls),
            "top_stalls": self._top(self.stalls),
            "top_loop_stalls": self._top(self.loop),
        }


class CallbackTimer:
    """
    Times every event-loop callback (each step of each task) and keeps the longest, garbage-collector pauses
    inside it excluded: the longest time one piece of code held the loop. A client that blocks shows its
    network round trip here; a non-blocking one shows microseconds to milliseconds.
    """

    def __init__(self, ticker: StallTicker) -> None:
        self.ticker = ticker
        self.longest = 0.0
        self.longest_name = ""
        self._original: Any = None

    def install(self) -> None:
        handle_type, original = asyncio.events.Handle, asyncio.events.Handle._run
        timer, clock = self, time.perf_counter

        def _run(handle: asyncio.Handle) -> None:
            started, collected = clock(), timer.ticker.gc_wall
            original(handle)
            took = clock() - started - (timer.ticker.gc_wall - collected)
            if took > timer.longest:
                timer.longest, timer.longest_name = took, _describe(handle)

        self._original = original
        handle_type._run = _run  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        if self._original is not None:
            asyncio.events.Handle._run = self._original  # type: ignore[method-assign]


def _describe(handle: asyncio.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        return f"task {task.get_coro().__qualname__}"  # type: ignore[union-attr]
    return str(getattr(callback, "__qualname__", callback))


async def harness_cpu_rate(seconds: float = 2.0) -> float:
    """CPU seconds per second that a :class:`StallTicker` and an :class:`RssSampler` cost on an idle loop."""
    ticker, sampler = StallTicker(), RssSampler()
    cpu = time.process_time()
    ticker.start()
    sampler.start()
    await asyncio.sleep(seconds)
    await ticker.stop()
    await sampler.stop()
    return (time.process_time() - cpu) / seconds


class RssSampler:
    """Samples VmRSS (KiB) and the open file descriptors every ``interval`` seconds; keeps the highest."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_kib = proc_status()["VmRSS"]
        self.peak_fds = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def sample(self) -> None:
        self.peak_kib = max(self.peak_kib, proc_status()["VmRSS"])
        self.peak_fds = max(self.peak_fds, len(os.listdir("/proc/self/fd")))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self.sample()


@dataclass
class Emulator:
    """A running emulator process: its URLs, pid and admin client."""

    base_url: str
    pid: int
    admin: Any

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/v1/llm"

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)


@contextmanager
def emulator_process(*flags: str, log: IO[str] | None = None) -> Iterator[Emulator]:
    """
    Run the emulator in its own process (so its CPU is not charged to the client) until the block ends.

    :param flags: extra CLI flags, e.g. ``("--latency", "0.05")``.
    """
    from airflow_provider_batches.emulator import EmulatorAdmin

    cmd = [sys.executable, "-m", "airflow_provider_batches.emulator", "--port", "0", "--api-key", API_KEY]
    proc = subprocess.Popen(
        [*cmd, *flags],
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env=bench_env(),
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening on (http://\S+)", line)
            url = m.group(1).rstrip("/") if m else None
        if url is None:
            raise RuntimeError(f"emulator did not start (exit code {proc.poll()})")
        yield Emulator(base_url=url, pid=proc.pid, admin=EmulatorAdmin(url))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_AIRFLOW_HOME: str | None = None


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of every benchmark process: a throwaway AIRFLOW_HOME, no example DAGs."""
    global _AIRFLOW_HOME
    if _AIRFLOW_HOME is None:
        _AIRFLOW_HOME = os.environ.get("MKA1_BENCH_AIRFLOW_HOME")
        if _AIRFLOW_HOME is None:
            _AIRFLOW_HOME = tempfile.mkdtemp(prefix="mka1-bench-home-")
            atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=_AIRFLOW_HOME,
        MKA1_BENCH_AIRFLOW_HOME=_AIRFLOW_HOME,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="True",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


def connection_env(base_url: str) -> dict[str, str]:
    """``mka1_default`` and ``openai_default`` pointing at an emulator, as AIRFLOW_CONN_ variables."""
    return {
        "AIRFLOW_CONN_MKA1_DEFAULT": json.dumps({"conn_type": "mka1", "host": base_url, "password": API_KEY}),
        # The openai client appends /batches/{id} to its base URL: point it at the API's root.
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {"conn_type": "openai", "host": base_url + "/api/v1/llm", "password": API_KEY}
        ),
    }


def run_child(module: str, args: Sequence[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``python -m module args`` and return the JSON object it prints on its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    found = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not found:
        raise RuntimeError(
            f"{module} {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return dict(json.loads(found[-1][len(RESULT_MARK) :]))


def emit(result: object) -> None:
    """Print a child's result where :func:`run_child` finds it, whatever else the child printed."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def quiet_logging() -> None:
    """Keep log output (Airflow's, the triggers', httpx's per-request lines) out of the measurement."""
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    for name in ("airflow", "httpx", "httpcore", "openai", "airflow_provider_batches", "airflow.task"):
        logging.getLogger(name).setLevel(logging.WARNING)
