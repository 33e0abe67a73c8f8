"""The async methods the trigger uses: same retry rule, one shared aiohttp session per loop, no blocking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from airflow_provider_batches.exceptions import MKA1ConnectionError, MKA1NotFoundError, MKA1ServerError
from airflow_provider_batches.hooks.mka1 import MKA1Hook, close_async_sessions
from airflow_provider_batches.models import Batch, BatchStatus, FileObject
from airflow_provider_batches.retry import RetryPolicy
from airflow_provider_batches.transport.sessions import active_sessions
from tests.hooks.conftest import API

BATCH_PATH = f"{API}/batches/*"


@pytest.fixture(autouse=True)
async def _close_sessions() -> AsyncIterator[None]:
    yield
    await close_async_sessions()


@pytest.fixture
def batch(hook: MKA1Hook, uploaded: FileObject, emulator) -> Batch:
    created = hook.create_batch(uploaded.id, "/v1/chat/completions")
    emulator.reset_calls()
    return created


async def test_aget_batch_retries_like_the_sync_path(make_hook, batch: Batch, emulator) -> None:
    hook = make_hook()
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=503, count=2)
    got = await hook.aget_batch(batch.id)
    assert got.id == batch.id
    assert emulator.calls("GET", BATCH_PATH) == 3


async def test_async_retry_after_and_drop(make_hook, batch: Batch, emulator) -> None:
    hook = make_hook()
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=429, count=1, retry_after_ms=300)
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="drop", count=1)
    started = time.monotonic()
    await hook.aget_batch(batch.id)
    assert time.monotonic() - started >= 0.3
    assert emulator.calls("GET", BATCH_PATH) == 3


async def test_async_stall_past_read_timeout(make_hook, batch: Batch, emulator) -> None:
    hook = make_hook(timeout=0.3, retry_policy=RetryPolicy(max_retries=1, backoff_base=0.01))
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="stall", seconds=1.0, count=1)
    assert (await hook.aget_batch(batch.id)).id == batch.id
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="stall", seconds=1.0, count=2)
    with pytest.raises(MKA1ConnectionError, match=r"no answer from 127\.0\.0\.1:\d+ within 0\.3 s"):
        await hook.aget_batch(batch.id)


async def test_async_errors_are_not_retried_or_are_exhausted(make_hook, batch: Batch, emulator) -> None:
    hook = make_hook(retry_policy=RetryPolicy(max_retries=1, backoff_base=0.01))
    with pytest.raises(MKA1NotFoundError) as info:
        await hook.aget_batch("batch_does_not_exist")
    assert info.value.request_id and "No batch found" in str(info.value)
    assert emulator.calls("GET", BATCH_PATH) == 1
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="status", status=502, count=2)
    with pytest.raises(MKA1ServerError, match="502 Bad Gateway: 502 Bad Gateway"):
        await hook.aget_batch(batch.id)
    assert emulator.calls("GET", BATCH_PATH) == 3


async def test_acancel_batch(make_hook, batch: Batch, emulator) -> None:
    hook = make_hook()
    emulator.add_fault(method="POST", path=f"{BATCH_PATH}/cancel", kind="status", status=503, count=1)
    cancelled = await hook.acancel_batch(batch.id)
    assert cancelled.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert emulator.calls("POST", f"{BATCH_PATH}/cancel") == 2
    assert (await hook.acancel_batch(batch.id)).id == batch.id  # already cancelling: fine


async def test_one_session_per_loop_and_connection(make_hook, batch: Batch, end_user: str) -> None:
    first, second = make_hook(), make_hook()
    await asyncio.gather(*(h.aget_batch(batch.id) for h in (first, second, first, second)))
    sessions = active_sessions()
    assert list(sessions) == [("mka1_default", end_user)]
    shared = sessions[("mka1_default", end_user)]
    assert shared.users == 2  # one lease per hook, however many calls
    other_user = make_hook(on_behalf_of="someone-else")
    with pytest.raises(MKA1NotFoundError):
        await other_user.aget_batch(batch.id)
    assert len(sessions) == 2 and sessions[("mka1_default", end_user)] is shared
    await first.aclose()
    await first.aclose()  # releasing twice does not take the other hook's share
    assert not shared.session.closed and shared.users == 1
    await second.aclose()  # the last user closes it
    assert shared.session.closed and ("mka1_default", end_user) not in sessions
    await second.aget_batch(batch.id)  # a new session replaces the closed one
    assert sessions[("mka1_default", end_user)] is not shared
    await second.aclose()
    await other_user.aclose()
    assert sessions == {}


def test_another_loop_gets_its_own_session(make_hook, batch: Batch) -> None:
    hook = make_hook()
    seen = []

    async def call() -> None:
        await hook.aget_batch(batch.id)
        seen.append(active_sessions()[("mka1_default", hook.on_behalf_of)])
        await close_async_sessions()

    asyncio.run(call())
    asyncio.run(call())
    assert len(seen) == 2 and seen[0] is not seen[1]


async def test_polls_never_block_the_event_loop(make_hook, batch: Batch, emulator) -> None:
    emulator.set_latency(0.3)
    hooks = [make_hook() for _ in range(20)]
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    started = time.monotonic()
    results = await asyncio.gather(*(h.aget_batch(batch.id) for h in hooks))
    elapsed = time.monotonic() - started
    done.set()
    await tick
    assert {b.id for b in results} == {batch.id}
    assert elapsed < 3.0  # concurrent, not 20 x 0.3 s one after the other
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f} s"


async def test_async_truncated_body_is_retried(make_hook, batch: Batch, emulator) -> None:
    emulator.add_fault(method="GET", path=BATCH_PATH, kind="truncate", count=1)
    assert (await make_hook().aget_batch(batch.id)).id == batch.id
    assert emulator.calls("GET", BATCH_PATH) == 2


async def test_async_with_releases_the_session_and_the_last_user_closes_it(make_hook, batch: Batch) -> None:
    async with make_hook() as first, make_hook() as second:
        await asyncio.gather(first.aget_batch(batch.id), second.aget_batch(batch.id))
        shared = active_sessions()[("mka1_default", first.on_behalf_of)]
        assert shared.users == 2
    assert shared.session.closed and shared.session.connector is None  # pool and sockets closed too
    assert active_sessions() == {}


USER_CODE = {
    "async with": (
        "async def main():\n"
        "    async with MKA1Hook() as hook:\n"
        "        return await hook.aget_batch('batch_none')\n"
    ),
    # The issue's own example: nothing releases the hook; the loop's shutdown closes the session.
    "bare asyncio.run": "def main():\n    return MKA1Hook().aget_batch('batch_none')\n",
}


@pytest.mark.parametrize("style", list(USER_CODE))
def test_user_code_ends_without_an_unclosed_session(emulator, tmp_path, style: str) -> None:
    """What a user writes in their own code, run as a script: aiohttp reports nothing left open."""
    import os
    import subprocess
    import sys

    from tests.conftest import connection_json

    script = tmp_path / "user_code.py"
    script.write_text(
        "import asyncio, gc\n"
        "from airflow_provider_batches.hooks.mka1 import MKA1Hook\n"
        "from airflow_provider_batches.exceptions import MKA1NotFoundError\n"
        f"{USER_CODE[style]}"
        "try:\n"
        "    asyncio.run(main())\n"
        "except MKA1NotFoundError:\n"
        "    print('answered')\n"
        "gc.collect()\n"
    )
    env = {**os.environ, "AIRFLOW_CONN_MKA1_DEFAULT": connection_json(emulator.base_url)}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "answered" in run.stdout
    assert "Unclosed" not in run.stderr, run.stderr[-3000:]
