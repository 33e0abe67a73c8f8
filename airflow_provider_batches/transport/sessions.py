"""
The registry of shared ``aiohttp`` sessions: one :class:`SharedSession` per event loop, connection and
end user, leased by every async transport on that loop, with its :class:`~.lane.Lane` and what every
wait on it would otherwise repeat (the settings, read once; the logger of the calls). It never sends a
request itself.

A triggerer running thousands of waits keeps one connection pool and one lane, not one per wait or per
poll. Hooks lease it; the last one to release it closes it, so no session outlives its waits.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.pacing import PROBE_CAP, PacingRules
from airflow_provider_batches.settings import ClientSettings
from airflow_provider_batches.transport.lane import Lane

if TYPE_CHECKING:
    import aiohttp

SessionKey = tuple[str, str | None]
"""(connection id, end user): what one shared session is for, on one event loop."""

# 100 connections at a 50 ms round trip serve 2,000 polls a second (5,000 waits polling every 30 s need
# about 170), and stay far below a triggerer's usual limit of 1,024 open files.
CONNECTION_LIMIT = 100


def lane_rules(settings: ClientSettings) -> PacingRules:
    """
    The pacing of a connection's lane: its ceiling, and probes of a failing gateway on the retry rule's
    backoff (capped at :data:`~airflow_provider_batches.pacing.PROBE_CAP`, so that recovery is seen soon).
    """
    return PacingRules(
        ceiling=settings.max_requests_per_second,
        probe_base=settings.retry.backoff_base,
        probe_cap=min(settings.retry.backoff_cap, PROBE_CAP),
    )


@dataclass
class SharedSession:
    """
    What every async call of one (loop, connection, end user) shares, and how many hold it.

    :param key: (connection id, end user).
    :param session: the ``aiohttp`` session.
    :param lane: the admission control in front of it.
    :param settings: the connection's settings, as the first hook read them.
    :param log: the logger of the calls (the first hook's).
    """

    key: SessionKey
    session: aiohttp.ClientSession
    lane: Lane
    settings: ClientSettings
    log: Any
    users: int = 0
    ssl_context: ssl.SSLContext | None = None
    # The on_behalf_of arguments of the hooks (without overrides) whose settings these are.
    requested: set[str | None] = field(default_factory=set)

    def ssl(self) -> ssl.SSLContext | bool:
        """What ``aiohttp`` gets as ``ssl=``: the ``verify`` setting, or a context of its CA bundle."""
        verify = self.settings.verify
        if isinstance(verify, bool):
            return verify
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context(cafile=verify)
        return self.ssl_context


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[SessionKey, SharedSession]] = (
    weakref.WeakKeyDictionary()
)
# The connection reads in flight, per loop and (connection id, on_behalf_of argument).
_reads: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[SessionKey, asyncio.Future[ClientSettings]]
] = weakref.WeakKeyDictionary()


def lease(settings: ClientSettings, log: Any) -> SharedSession:
    """
    Take a share of the running loop's session for the settings' (connection, end user), opening it (and
    its lane) if there is none or it closed.

    :param settings: the hook's settings.
    :param log: the hook's logger (the calls' logger, if this opens the session).
    """
    import aiohttp

    key = (settings.conn_id, settings.on_behalf_of)
    loop = asyncio.get_running_loop()
    if loop not in _guards:
        _close_when_the_loop_shuts_down(loop)
    sessions = _registry.setdefault(loop, {})
    shared = sessions.get(key)
    if shared is None or shared.session.closed:
        connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, keepalive_timeout=30, ttl_dns_cache=300)
        user = f" (on behalf of {settings.on_behalf_of})" if settings.on_behalf_of else ""
        lane = Lane(settings.conn_id + user, lane_rules(settings))
        session = aiohttp.ClientSession(connector=connector)
        shared = sessions[key] = SharedSession(key, session, lane, settings, log)
    shared.users += 1
    return shared


async def release(shared: SharedSession) -> None:
    """Give back a share taken with :func:`lease`; the last share closes the session and its lane."""
    shared.users -= 1
    if shared.users > 0:
        return
    sessions = _registry.get(asyncio.get_running_loop(), {})
    if sessions.get(shared.key) is shared:
        del sessions[shared.key]
    shared.lane.close()
    await shared.session.close()


_guards: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[AsyncGenerator[None, None], asyncio.Future[None]]
] = weakref.WeakKeyDictionary()


def _close_when_the_loop_shuts_down(loop: asyncio.AbstractEventLoop) -> None:
    """
    Close the loop's sessions when it shuts down, for hooks never released (``asyncio.run(hook.aget_batch(
    ...))`` without ``async with`` or ``aclose()``): ``asyncio.run`` and other runners close every started
    async generator of a loop before closing the loop, and this one's ``finally`` closes the sessions, so
    aiohttp never reports an "Unclosed client session". A triggerer's loop never shuts down: no effect there.
    """

    async def guard() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await close_async_sessions()

    # One per loop, for its whole life: a replaced guard, once collected, would close the sessions early.
    generator = guard()
    started = asyncio.ensure_future(anext(generator), loop=loop)  # once started, the shutdown closes it
    _guards[loop] = (generator, started)  # the loop keeps only a weak reference to its async generators


async def settings_once(
    conn_id: str, on_behalf_of: str | None, read: Callable[[], Awaitable[ClientSettings]]
) -> ClientSettings:
    """
    The settings of ``conn_id`` for hooks given ``on_behalf_of`` (and no other override): those a lane
    of this loop already holds, else one ``read()`` shared by every hook that asks meanwhile (a triggerer
    starting 5,000 waits looks the connection up and masks its key once, not 5,000 times).

    :param conn_id: the connection id.
    :param on_behalf_of: the hooks' ``on_behalf_of`` argument (``None``: the connection's).
    :param read: reads and checks the connection.
    """
    loop = asyncio.get_running_loop()
    for shared in _registry.get(loop, {}).values():
        if shared.settings.conn_id == conn_id and on_behalf_of in shared.requested:
            return shared.settings
    reads = _reads.setdefault(loop, {})
    key = (conn_id, on_behalf_of)
    pending = reads.get(key)
    if pending is None:
        pending = reads[key] = asyncio.ensure_future(read())
        pending.add_done_callback(lambda _: reads.pop(key, None))
    return await asyncio.shield(pending)


def active_sessions() -> dict[SessionKey, SharedSession]:
    """The shared sessions of the running loop by (connection id, end user): the live registry, to read."""
    return _registry.setdefault(asyncio.get_running_loop(), {})


def active_lanes() -> dict[SessionKey, Lane]:
    """The lanes of the running loop by (connection id, end user) (a copy)."""
    return {key: shared.lane for key, shared in active_sessions().items()}


async def close_async_sessions() -> None:
    """Close every shared ``aiohttp`` session of the running event loop (for tests and clean shutdowns)."""
    sessions = _registry.pop(asyncio.get_running_loop(), {})
    for shared in sessions.values():
        shared.lane.close()
        await shared.session.close()
