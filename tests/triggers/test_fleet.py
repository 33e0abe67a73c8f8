"""
Many waits on one API key, as a triggerer runs them, over HTTP against the emulator: the shared lane
paces them to the key's rate limit, honours Retry-After, probes a failing gateway for all of them, and
is per (event loop, connection, end user), closed with its last wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.hooks.mka1 import MKA1Hook, active_lanes, close_async_sessions
from airflow_provider_batches.pacing import OPEN, PACED
from airflow_provider_batches.transport import sessions
from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger
from tests.conftest import ENDPOINT, connection_json, write_requests

BATCHES = "/api/v1/llm/batches/*"
LANE_LOG = "airflow_provider_batches.transport.lane"


@pytest.fixture(autouse=True)
async def _no_lane_left() -> Any:
    yield
    await close_async_sessions()


@pytest.fixture
def fast_conn(emulator, monkeypatch) -> str:
    """`mka1_default` with a quick retry rule (so that the lane's probes are quick too)."""
    conn = connection_json(emulator.base_url, max_retries=2, backoff_base=0.05)
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", conn)
    return "mka1_default"


@pytest.fixture
def quick_probes(monkeypatch) -> None:
    """Probes of a failing gateway at most 0.5 s apart (8 s by default): an outage test takes seconds."""
    rules = sessions.lane_rules
    monkeypatch.setattr(sessions, "lane_rules", lambda settings: replace(rules(settings), probe_cap=0.5))


def create_batches(tmp_path: Path, count: int, lines: int = 1) -> list[str]:
    hook = MKA1Hook()
    file_id = hook.upload_file(write_requests(tmp_path / f"in-{time.monotonic_ns()}.jsonl", lines)).id
    return [hook.create_batch(file_id, ENDPOINT).id for _ in range(count)]


async def first_event(trigger: MKA1BatchTrigger) -> dict[str, Any]:
    """What the triggerer does with a trigger: iterate run() to its first event, then close it."""
    events = trigger.run()
    try:
        return dict((await events.__anext__()).payload)
    finally:
        await events.aclose()


async def run_fleet(batch_ids: list[str], limit: float = 60.0, **kwargs: Any) -> list[dict[str, Any]]:
    async def one(batch_id: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return await first_event(MKA1BatchTrigger(batch_id=batch_id, **kwargs))

    return await asyncio.wait_for(asyncio.gather(*(one(b) for b in batch_ids)), limit)


async def test_a_fleet_on_a_rate_limited_key_all_succeeds_without_spending_its_error_budget(
    emulator, fast_conn, tmp_path, caplog
) -> None:
    batch_ids = create_batches(tmp_path, 60)
    emulator.set_rate_limit(15)
    emulator.reset_calls()
    caplog.set_level(logging.INFO, logger=LANE_LOG)

    # error_budget=0: a single 429 reaching a wait would end it with `error`.
    events = await run_fleet(batch_ids, poll_interval=0.5, max_poll_interval=1.0, error_budget=0)

    assert [e["status"] for e in events] == ["success"] * 60
    calls = emulator.calls("GET", BATCHES)
    limited = emulator.calls("GET", BATCHES, status=429)
    assert limited < calls / 2, (calls, limited)  # the lane paced them (alone, each wait retried 10x)
    paced = [r for r in caplog.records if r.name == LANE_LOG and "pacing at" in r.getMessage()]
    assert len(paced) <= 1  # one line when pacing starts, never one per call
    assert not active_lanes()  # the last wait closed it


async def test_the_lane_slows_down_on_429s_and_recovers_once_the_limit_is_lifted(
    emulator, fast_conn, tmp_path, monkeypatch, caplog
) -> None:
    # A quiet spell of 4 s instead of 30 s ends pacing, so that the test is short.
    rules = sessions.lane_rules
    monkeypatch.setattr(sessions, "lane_rules", lambda settings: replace(rules(settings), quiet_seconds=4.0))
    batch_ids = create_batches(tmp_path, 40, lines=20_000)  # each runs for 100 s
    emulator.set_rate_limit(10)
    caplog.set_level(logging.INFO, logger=LANE_LOG)
    fleet = asyncio.create_task(run_fleet(batch_ids, poll_interval=0.2, max_poll_interval=0.2))
    await asyncio.sleep(3.0)
    (lane,) = active_lanes().values()
    # AIMD probes a little past the limit between cuts, so any single instant may read above it: within
    # a few more seconds the lane must be paced at or under 1.2x the limit.
    started = time.monotonic()
    while not (lane.pacing.mode == PACED and lane.pacing.rate <= 12):
        assert time.monotonic() - started < 3, (lane.pacing.mode, lane.pacing.rate)
        await asyncio.sleep(0.05)
    emulator.reset_calls()
    await asyncio.sleep(2.0)
    calls, limited = emulator.calls("GET", BATCHES), emulator.calls("GET", BATCHES, status=429)
    assert calls <= 2 * 14 and limited <= calls / 4, (calls, limited)  # at about the limit, few 429s

    emulator.set_rate_limit(None)
    started = time.monotonic()
    while lane.pacing.mode != OPEN or lane.pacing.rate <= 40:
        assert time.monotonic() - started < 15, (lane.pacing.mode, lane.pacing.rate)
        await asyncio.sleep(0.2)
    messages = [r.getMessage() for r in caplog.records if r.name == LANE_LOG]
    assert sum("pacing at" in m for m in messages) == 1, messages
    assert sum("pacing ends" in m for m in messages) == 1, messages
    fleet.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fleet
    assert not active_lanes()
    for batch_id in batch_ids:
        MKA1Hook().cancel_batch(batch_id)


async def test_retry_after_pauses_the_whole_lane(emulator, fast_conn, tmp_path) -> None:
    batch_ids = create_batches(tmp_path, 5)
    emulator.add_fault(method="GET", path=BATCHES, kind="status", status=429, count=1, retry_after=1.5)
    emulator.reset_calls()
    hook = MKA1Hook()
    started = time.monotonic()
    polls = asyncio.gather(*(hook.aget_batch(b) for b in batch_ids))
    await asyncio.sleep(1.0)
    assert emulator.calls("GET", BATCHES) == 1  # the 429; nothing else went out during the pause
    batches = await polls
    assert time.monotonic() - started >= 1.5
    assert [b.id for b in batches] == batch_ids
    assert emulator.calls("GET", BATCHES) == 6
    await hook.aclose()


async def test_a_gateway_that_fails_everything_still_ends_the_waits_with_error(
    emulator, fast_conn, quick_probes, tmp_path
) -> None:
    batch_ids = create_batches(tmp_path, 20)
    emulator.add_fault(method="GET", path=BATCHES, kind="status", status=503, count=100_000)
    emulator.reset_calls()

    events = await run_fleet(batch_ids, poll_interval=0.1, max_poll_interval=0.2, error_budget=2)

    assert {e["status"] for e in events} == {"error"}
    assert {e["error"]["status_code"] for e in events} == {503}
    assert all("error_budget=2" in e["message"] for e in events)
    # Probed on behalf of all: far fewer calls than 20 waits x 3 polls x 3 tries each.
    assert emulator.calls("GET", BATCHES) < 60


async def test_every_wait_is_back_within_a_poll_interval_of_the_gateways_recovery(
    emulator, fast_conn, quick_probes, tmp_path
) -> None:
    batch_ids = create_batches(tmp_path, 20)
    await asyncio.sleep(1.0)  # they are complete
    emulator.add_fault(method="GET", path=BATCHES, kind="status", status=503, count=12)
    recovered: list[float] = []

    async def watch() -> None:
        while emulator.faults():
            await asyncio.to_thread(time.sleep, 0.05)
        recovered.append(time.monotonic())

    watcher = asyncio.create_task(watch())
    events = await run_fleet(batch_ids, poll_interval=2.0, max_poll_interval=60.0, error_budget=30)
    ended = time.monotonic()
    await watcher

    assert [e["status"] for e in events] == ["success"] * 20
    assert ended - recovered[0] < 2.0 + 0.5 + 1.0  # a poll interval, a probe pause and a little
    # The lane probed for all: 12 failed calls, not 20 waits x 12 tries.
    assert emulator.calls("GET", BATCHES) <= 12 + 20 + 20


async def test_one_lane_per_connection_and_end_user_released_with_its_last_wait(
    emulator, fast_conn, tmp_path, monkeypatch
) -> None:
    mine = create_batches(tmp_path, 3)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MKA1_OTHER", connection_json(emulator.base_url, on_behalf_of="user-b", timeout=5)
    )
    theirs = [
        MKA1Hook(mka1_conn_id="mka1_other")
        .create_batch(
            MKA1Hook(mka1_conn_id="mka1_other").upload_file(write_requests(tmp_path / "b.jsonl", 1)).id,
            ENDPOINT,
        )
        .id
        for _ in range(2)
    ]
    await asyncio.sleep(1.0)  # complete, so that each poll is the last
    hooks = [MKA1Hook() for _ in mine] + [MKA1Hook(mka1_conn_id="mka1_other") for _ in theirs]
    await asyncio.gather(*(h.aget_batch(b) for h, b in zip(hooks, mine + theirs, strict=True)))
    lanes = active_lanes()
    assert sorted(lanes) == [("mka1_default", None), ("mka1_other", "user-b")]
    # The lane carries the settings: read once per connection, one object for all its waits.
    assert hooks[0]._settings is hooks[1]._settings is hooks[2]._settings
    assert hooks[3]._settings is hooks[4]._settings is not hooks[0]._settings
    open_sessions = [s.session for s in sessions.active_sessions().values()]
    for hook in hooks[:-1]:
        await hook.aclose()
    assert list(active_lanes()) == [("mka1_other", "user-b")]  # one wait of it still holds it
    await hooks[-1].aclose()
    assert not active_lanes() and all(s.closed for s in open_sessions)  # no unclosed session at exit

    # On another event loop, the same connection gets a lane of its own.
    other_loop_lanes = await asyncio.to_thread(_lanes_on_a_new_loop, mine[0])
    assert other_loop_lanes == [("mka1_default", None)]
    assert json.dumps(MKA1BatchTrigger(batch_id=mine[0]).serialize()[1])  # nothing of the lane in kwargs


def _lanes_on_a_new_loop(batch_id: str) -> list[tuple[str, str | None]]:
    async def main() -> list[tuple[str, str | None]]:
        hook = MKA1Hook()
        await hook.aget_batch(batch_id)
        keys = list(active_lanes())
        await hook.aclose()
        return keys

    return asyncio.run(main())
