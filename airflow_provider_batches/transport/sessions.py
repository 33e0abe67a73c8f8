"""
The registry of shared ``aiohttp`` sessions: one :class:`SharedSession` per event loop, connection and
end user, leased by every async transport on that loop. It never sends a request itself.

A triggerer running thousands of waits keeps one connection pool, not one per wait or per poll. Hooks
lease it; the last one to release it closes it, so no session outlives its waits. Whatever every request
of one (loop, connection, end user) must share (the session today; a rate limit, say) belongs on
:class:`SharedSession`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

SessionKey = tuple[str, str | None]
"""(connection id, end user): what one shared session is for, on one event loop."""

# 100 connections at a 50 ms round trip serve 2,000 polls a second (5,000 waits polling every 30 s need
# about 170), and stay far below a triggerer's usual limit of 1,024 open files.
CONNECTION_LIMIT = 100


@dataclass
class SharedSession:
    """What every async call of one (loop, connection, end user) shares, and how many hold it."""

    key: SessionKey
    session: aiohttp.ClientSession
    users: int = 0


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[SessionKey, SharedSession]] = (
    weakref.WeakKeyDictionary()
)


def lease(key: SessionKey) -> SharedSession:
    """
    Take a share of the running loop's session for ``key``, opening it if there is none (or it closed).

    :param key: (connection id, end user).
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    if loop not in _guards:
        _close_when_the_loop_shuts_down(loop)
    sessions = _registry.setdefault(loop, {})
    shared = sessions.get(key)
    if shared is None or shared.session.closed:
        connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, keepalive_timeout=30, ttl_dns_cache=300)
        shared = sessions[key] = SharedSession(key, aiohttp.ClientSession(connector=connector))
    shared.users += 1
    return shared


async def release(shared: SharedSession) -> None:
    """Give back a share taken with :func:`lease`; the last share closes the session."""
    shared.users -= 1
    if shared.users > 0:
        return
    sessions = _registry.get(asyncio.get_running_loop(), {})
    if sessions.get(shared.key) is shared:
        del sessions[shared.key]
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


def active_sessions() -> dict[SessionKey, SharedSession]:
    """The shared sessions of the running loop by (connection id, end user): the live registry, to read."""
    return _registry.setdefault(asyncio.get_running_loop(), {})


async def close_async_sessions() -> None:
    """Close every shared ``aiohttp`` session of the running event loop (for tests and clean shutdowns)."""
    sessions = _registry.pop(asyncio.get_running_loop(), {})
    for shared in sessions.values():
        await shared.session.close()
