"""
API calls per batch: GET calls a trigger makes before it yields, for batches of 10 minutes and 2 hours.

Method (a simulated clock, exact and fast): the emulator runs with its clock frozen
(``--time-scale 1e-9``); the real, unmodified ``trigger.run()`` polls it over HTTP, and each
``asyncio.sleep(d)`` the trigger asks for is turned into ``advance_clock(d)`` on the emulator (which
returns once its batches have caught up) instead of a real wait. The trigger's own clock (our poller's
``clock``; the trigger modules' ``time``) reads the same simulated time. So every poll sees exactly the
batch the real API would show at that moment, and a 2-hour wait takes a few seconds. Batches: 60 s
validating, then their lines at 1 line/s, then 60 s finalizing (10 min: 480 lines; 2 h: 7,080 lines).
The GET count comes from the emulator's call counter; the delay is the simulated time of the event minus
the batch's completion time. Ours runs with its defaults; the openai trigger with its operator's default
``poll_interval=60``, i.e. a fixed 60 s poll. Each runs ``--runs`` times, the wait starting 0, 12, 24 ...
seconds after the batch is created (so that a fixed poll meets the completion at every phase; our
intervals are jittered too, seeded per run).

    python -m benchmarks.api_calls --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
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
    quiet_logging,
    report,
    run_child,
)

VALIDATION_SECONDS = 60.0
FINALIZING_SECONDS = 60.0
LINES_PER_SECOND = 1.0
DURATIONS = {"10 min": 600.0, "2 h": 7200.0}
OPENAI_DEFAULT_POLL = 60.0  # OpenAITriggerBatchOperator(poll_interval=60)


class SimClock:
    """Simulated time shared by the trigger and the emulator; sleeping moves both forward."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.now = admin.now()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float, result: Any = None) -> Any:
        if delay > 0:
            self.now = self.admin.advance_clock(delay)
        await _REAL_SLEEP(0)
        return result


_REAL_SLEEP = asyncio.sleep


class _Shim:
    """Stands in for a module (``asyncio`` or ``time``) in a trigger module: some names go to ``clock``."""

    def __init__(self, real: Any, **overrides: Any) -> None:
        self._real, self._overrides = real, overrides

    def __getattr__(self, name: str) -> Any:
        return self._overrides[name] if name in self._overrides else getattr(self._real, name)


def _input_file(base: str, lines: int) -> str:
    import requests

    line = '{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n'
    content = "".join(line % i for i in range(lines))
    resp = requests.post(
        f"{base}/files",
        headers={"Authorization": f"Bearer {API_KEY}"},
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", content)},
        timeout=60,
    )
    resp.raise_for_status()
    return str(resp.json()["id"])


def _create_batch(base: str, file_id: str) -> dict[str, Any]:
    import requests

    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    resp = requests.post(
        f"{base}/batches", headers={"Authorization": f"Bearer {API_KEY}"}, json=body, timeout=60
    )
    resp.raise_for_status()
    return dict(resp.json())


async def _wait(impl: str, batch_id: str, clock: SimClock) -> str:
    if impl == "ours":
        from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger

        trigger: Any = MKA1BatchTrigger(batch_id=batch_id)
    else:
        from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger

        trigger = OpenAIBatchTrigger(
            conn_id="openai_default", batch_id=batch_id, poll_interval=OPENAI_DEFAULT_POLL, timeout=86400
        )
    events = trigger.run()
    try:
        event = await events.__anext__()
    finally:
        await events.aclose()
    return str(event.payload.get("status"))


def _patch(clock: SimClock) -> None:
    """Point the trigger modules' ``asyncio.sleep`` and clocks at the simulated clock."""
    from airflow.providers.openai.triggers import openai as openai_triggers

    from airflow_provider_batches import polling
    from airflow_provider_batches.triggers import mka1 as our_triggers

    for module in (our_triggers, openai_triggers):
        module.asyncio = _Shim(asyncio, sleep=clock.sleep)  # type: ignore[attr-defined]
        module.time = _Shim(time, time=clock.time, monotonic=clock.monotonic)  # type: ignore[attr-defined]
    poller = getattr(polling, "BatchPoller", None)
    defaults = getattr(getattr(poller, "__init__", None), "__kwdefaults__", None)
    if not defaults or "clock" not in defaults:
        # Without it our poller would pace itself by the real clock: the figures would be nonsense.
        raise RuntimeError("BatchPoller no longer takes a `clock`: update benchmarks/api_calls.py")
    defaults["clock"] = clock.time


def _child(admin_url: str, runs: int) -> dict[str, Any]:
    from airflow_provider_batches.emulator import EmulatorAdmin

    quiet_logging()
    admin = EmulatorAdmin(admin_url)
    clock = SimClock(admin)
    _patch(clock)
    return asyncio.run(_all(admin, clock, runs))


async def _all(admin: Any, clock: SimClock, runs: int) -> dict[str, Any]:
    import random

    out: dict[str, Any] = {}
    for label, seconds in DURATIONS.items():
        lines = int(seconds - VALIDATION_SECONDS - FINALIZING_SECONDS)
        file_id = _input_file(admin.api_url, lines)
        for impl in ("ours", "openai"):
            for run in range(runs):
                random.seed(run)
                batch = _create_batch(admin.api_url, file_id)
                created = admin.now()
                # The wait starts a little after the batch is created (the operator submits, then defers):
                # spread over one minute, so that a fixed 60 s poll meets the completion at every phase.
                clock.now = admin.advance_clock(OPENAI_DEFAULT_POLL * run / runs) if run else created
                status = await _wait(impl, batch["id"], clock)
                calls = admin.calls(method="GET", path=f"/api/v1/llm/batches/{batch['id']}")
                out.setdefault(f"{label}/{impl}", []).append(
                    {"calls": calls, "delay": clock.now - (created + seconds), "status": status}
                )
    return out


def measure(runs: int) -> dict[str, Any]:
    flags = [
        "--time-scale", "1e-9",
        "--validation-seconds", str(VALIDATION_SECONDS),
        "--lines-per-second", str(LINES_PER_SECOND),
        "--finalizing-seconds", str(FINALIZING_SECONDS),
    ]  # fmt: skip
    with emulator_process(*flags) as emu:
        env = bench_env(**connection_env(emu.base_url))
        return run_child("benchmarks.api_calls", ["--child", emu.base_url, "--runs", str(runs)], env, 600)


def rows(result: dict[str, Any]) -> list[Row]:
    out = []
    name = "fixed 60 s poll = openai default"
    for label in DURATIONS:
        ours, other = result[f"{label}/ours"], result[f"{label}/openai"]
        b = f"API calls, {label} batch"
        calls, other_calls = (statistics.median(r["calls"] for r in x) for x in (ours, other))
        spread = f"ours {min(r['calls'] for r in ours)}-{max(r['calls'] for r in ours)}"
        delay, other_delay = (max(r["delay"] for r in x) for x in (ours, other))
        out += [
            Row(b, "GET calls before the event, median", "", calls, other_calls, name,
                "< fixed 60 s poll", calls < other_calls, f"{len(ours)} runs each; {spread}"),
            Row(b, "delay after completion, median", "s", statistics.median(r["delay"] for r in ours),
                statistics.median(r["delay"] for r in other), name),
            Row(b, "delay after completion, worst", "s", delay, other_delay, name, "<= 60 s", delay <= 60),
        ]  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser("benchmarks.api_calls", __doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs of our trigger per batch length")
    parser.add_argument("--child", metavar="EMULATOR_URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        emit(_child(args.child, args.runs))
        return 0
    result = measure(args.runs)
    print(json.dumps(result), file=sys.stderr)
    report(rows(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
