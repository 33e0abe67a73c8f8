"""
The physical limit of a triggerer wait, for ``benchmarks.triggerer`` to measure ours against: a bare
``aiohttp`` poller on one shared session that reads the batch's status and nothing else (no settings,
no retry rule, no models, no logging). It is a benchmark baseline, never a way to wait on a batch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from benchmarks._common import API_KEY

if TYPE_CHECKING:
    import aiohttp

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def _session() -> aiohttp.ClientSession:
    import aiohttp

    loop = asyncio.get_running_loop()
    if loop not in _sessions:
        # The same pool as the hook's shared session: at most 100 connections.
        connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30)
        _sessions[loop] = aiohttp.ClientSession(
            connector=connector, headers={"Authorization": f"Bearer {API_KEY}"}
        )
    return _sessions[loop]


class BarePoller:
    """
    One wait: GET the batch every ``poll_interval`` seconds until its status is terminal; then one event,
    a :class:`~airflow.triggers.base.TriggerEvent` as a trigger's (the triggerer has Airflow imported).

    :param api_url: the API's URL, ``http://host:port/api/v1/llm``.
    :param batch_id: the batch to wait on.
    :param poll_interval: seconds between polls.
    """

    def __init__(self, api_url: str, batch_id: str, poll_interval: float) -> None:
        self.url = f"{api_url}/batches/{batch_id}"
        self.poll_interval = poll_interval

    async def poll(self) -> str:
        async with _session().get(self.url) as response:
            body = await response.read()
        return str(json.loads(body).get("status")) if response.status == 200 else "unknown"

    async def run(self) -> AsyncIterator[Any]:
        from airflow.triggers.base import TriggerEvent

        while True:
            status = await self.poll()
            if status in TERMINAL:
                yield TriggerEvent({"status": "success" if status == "completed" else status})
                return
            await asyncio.sleep(self.poll_interval)
