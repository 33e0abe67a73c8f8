"""
The async transport (``aiohttp``), for triggers: every call goes out on the event loop's shared session
for its connection and end user (:mod:`.sessions`), in one retry loop (:meth:`AsyncTransport.call`)
driven by one :class:`~airflow_provider_batches.retry.RetryBudget` per call. It never blocks the loop
and never decides what a batch means.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.constants import ERROR_BODY_LIMIT
from airflow_provider_batches.responses import ModelT, api_error, connection_error, parse_model, request_id_of
from airflow_provider_batches.retry import Attempt, RetryBudget
from airflow_provider_batches.settings import ClientSettings
from airflow_provider_batches.transport import log_call, next_delay, sessions

if TYPE_CHECKING:
    import aiohttp


class AsyncTransport:
    """
    Send requests for one hook with ``aiohttp`` (imported here on first use: a DAG file never pays it).

    :param settings: the connection's settings.
    :param log: the hook's logger.
    """

    def __init__(self, settings: ClientSettings, log: Any) -> None:
        self.settings = settings
        self.log = log
        self.key: sessions.SessionKey = (settings.conn_id, settings.on_behalf_of)
        self._ssl_context: ssl.SSLContext | None = None
        # (loop, share) this transport leased; used on another loop, it leases that loop's session.
        self._lease: tuple[weakref.ref[asyncio.AbstractEventLoop], sessions.SharedSession] | None = None

    async def call(self, model: type[ModelT], method: str, path: str) -> ModelT:
        """The retry loop: send a bodiless request until it succeeds or the budget says stop; parse it."""
        budget = RetryBudget(self.settings.retry)
        while True:
            attempt = await self._attempt(method, path)
            if attempt.response is not None:
                return parse_model(
                    model, attempt.response, attempt.status or 200, attempt.headers, method=method, path=path
                )
            delay = next_delay(self.log, budget, attempt)
            if delay is None:
                assert attempt.error is not None
                raise attempt.error
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Give back this transport's share of the loop's session; the last share closes it."""
        lease, self._lease = self._lease, None
        if lease is not None and lease[0]() is asyncio.get_running_loop():
            await sessions.release(lease[1])

    def _shared(self) -> sessions.SharedSession:
        loop = asyncio.get_running_loop()
        lease = self._lease
        if lease is None or lease[0]() is not loop or lease[1].session.closed:
            self._lease = lease = (weakref.ref(loop), sessions.lease(self.key))
        return lease[1]

    async def _attempt(self, method: str, path: str) -> Attempt:
        """One try; the response in the :class:`Attempt` is the body (bytes) of a 2xx answer."""
        import aiohttp

        settings = self.settings
        shared = self._shared()
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.timeout
        )
        started = time.monotonic()
        try:
            async with shared.session.request(
                method,
                settings.url(path),
                headers=settings.headers,
                timeout=timeout,
                allow_redirects=False,
                ssl=self._ssl(),
            ) as response:
                body = await (response.read() if response.status < 300 else _read_bounded(response))
                status, headers = response.status, response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            log_call(self.log, method, path, type(exc).__name__, None, started)
            failure = connection_error(method, path, exc, where=settings.where, read_timeout=settings.timeout)
            return Attempt(error=failure)
        log_call(self.log, method, path, status, request_id_of(headers), started)
        if status < 300:
            return Attempt(response=body, status=status, headers=headers)
        error = api_error(status, body, headers, method=method, path=path, secret=settings.api_key)
        return Attempt(error=error, status=status, headers=headers)

    def _ssl(self) -> ssl.SSLContext | bool:
        verify = self.settings.verify
        if isinstance(verify, bool):
            return verify
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=verify)
        return self._ssl_context


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < ERROR_BODY_LIMIT and (chunk := await response.content.read(ERROR_BODY_LIMIT - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
