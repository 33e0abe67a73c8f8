"""
The async transport (``aiohttp``), for triggers: every call waits for admission in the lane of the event
loop's shared session for its connection and end user (:mod:`.sessions`), then goes out, in one retry
loop (:meth:`AsyncTransport.call`) driven by one :class:`~airflow_provider_batches.retry.RetryBudget` per
call. It never blocks the loop and never decides what a batch means.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.constants import ERROR_BODY_LIMIT
from airflow_provider_batches.responses import ModelT, api_error, connection_error, parse_model, request_id_of
from airflow_provider_batches.retry import Attempt, RetryBudget, is_retryable_status, retry_after_seconds
from airflow_provider_batches.settings import ClientSettings
from airflow_provider_batches.transport import log_call, sessions
from airflow_provider_batches.transport.lane import LaneProbeFailed

if TYPE_CHECKING:
    import aiohttp


class AsyncTransport:
    """
    Send requests for one hook with ``aiohttp`` (imported here on first use: a DAG file never pays it).

    :param settings: the connection's settings.
    :param log: the hook's logger (the calls of a lane log to the logger of the hook that opened it).
    :param on_behalf_of: the hook's ``on_behalf_of`` argument, when its settings have no other override
        and may be shared with the hooks that pass the same (see :func:`.sessions.settings_once`).
    :param shares_settings: whether ``settings`` are shared so.
    """

    def __init__(
        self,
        settings: ClientSettings,
        log: Any,
        *,
        on_behalf_of: str | None = None,
        shares_settings: bool = False,
    ) -> None:
        self.settings = settings
        self.log = log
        self.on_behalf_of = on_behalf_of
        self.shares_settings = shares_settings
        # (loop, share) this transport leased; used on another loop, it leases that loop's session.
        self._lease: tuple[weakref.ref[asyncio.AbstractEventLoop], sessions.SharedSession] | None = None

    async def call(self, model: type[ModelT], method: str, path: str, *, urgent: bool = False) -> ModelT:
        """
        The retry loop: send a bodiless request until it succeeds or the budget says stop; parse it.

        A 429 is the lane's to absorb: the call waits for admission again, keeping its place, and spends
        no retry. A transient failure spends one, and the lane's probes pace the next try (no backoff of
        its own); while the lane is down, each failed probe is a failed try of this call too.

        :param urgent: the call's batch is about to end (a head start in the lane's queue).
        """
        budget = RetryBudget(self.settings.retry)
        shared = self._shared()
        lane = shared.lane
        while True:
            try:
                ticket = await lane.admit(urgent=urgent, since=budget.started)
            except LaneProbeFailed as failed:
                attempt = Attempt(error=failed.error_for(method, path))
            else:
                try:
                    attempt = await self._attempt(shared, method, path)
                except BaseException:
                    lane.abandoned(ticket)
                    raise
                status = attempt.status
                if attempt.response is not None:
                    lane.succeeded(ticket)
                    return parse_model(
                        model, attempt.response, status or 200, attempt.headers, method=method, path=path
                    )
                if status == HTTPStatus.TOO_MANY_REQUESTS:
                    lane.rate_limited(ticket, retry_after_seconds(attempt.headers))
                    continue
                if status is not None and not is_retryable_status(status):
                    lane.succeeded(ticket)  # an answer, if not the one hoped for: the gateway is up
                else:
                    assert attempt.error is not None
                    lane.failed(ticket, attempt.error)
            if budget.next_delay(attempt) is None:
                assert attempt.error is not None
                raise attempt.error
            shared.log.warning(
                "%s; retry %d of %d when its lane lets it go.",
                attempt.error,
                budget.retries,
                budget.policy.max_retries,
            )

    async def aclose(self) -> None:
        """Give back this transport's share of the loop's session; the last share closes it."""
        lease, self._lease = self._lease, None
        if lease is not None and lease[0]() is asyncio.get_running_loop():
            await sessions.release(lease[1])

    def _shared(self) -> sessions.SharedSession:
        loop = asyncio.get_running_loop()
        lease = self._lease
        if lease is None or lease[0]() is not loop or lease[1].session.closed:
            self._lease = lease = (weakref.ref(loop), sessions.lease(self.settings, self.log))
            if self.shares_settings:
                lease[1].requested.add(self.on_behalf_of)
        return lease[1]

    async def _attempt(self, shared: sessions.SharedSession, method: str, path: str) -> Attempt:
        """One try; the response in the :class:`Attempt` is the body (bytes) of a 2xx answer."""
        import aiohttp

        settings = self.settings
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
                ssl=shared.ssl(),
            ) as response:
                body = await (response.read() if response.status < 300 else _read_bounded(response))
                status, headers = response.status, response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            log_call(shared.log, method, path, type(exc).__name__, None, started)
            failure = connection_error(method, path, exc, where=settings.where, read_timeout=settings.timeout)
            return Attempt(error=failure)
        log_call(shared.log, method, path, status, request_id_of(headers), started)
        if status < 300:
            return Attempt(response=body, status=status, headers=headers)
        error = api_error(status, body, headers, method=method, path=path, secret=settings.api_key)
        return Attempt(error=error, status=status, headers=headers)


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < ERROR_BODY_LIMIT and (chunk := await response.content.read(ERROR_BODY_LIMIT - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
