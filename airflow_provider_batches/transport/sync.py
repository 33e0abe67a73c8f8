"""
The sync transport (``requests``): one session per hook, one retry loop (:meth:`SyncTransport.send`)
driven by one :class:`~airflow_provider_batches.retry.RetryBudget` per call, and resumable downloads.
It moves bytes and never decides what a batch or a file means.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from airflow_provider_batches.constants import CHUNK_SIZE, ERROR_BODY_LIMIT
from airflow_provider_batches.exceptions import MKA1ConnectionError, MKA1InvalidResponseError
from airflow_provider_batches.responses import ModelT, api_error, connection_error, parse_model, request_id_of
from airflow_provider_batches.retry import Attempt, RetryBudget
from airflow_provider_batches.settings import ClientSettings
from airflow_provider_batches.transport import log_call, next_delay

if TYPE_CHECKING:
    import requests

R = TypeVar("R")


class _NoNetrc:
    # Any auth callable stops requests from replacing our Authorization header with ~/.netrc credentials.
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


class SyncTransport:
    """
    Send requests for one hook with ``requests`` (imported here on first use: a DAG file never pays it).

    :param settings: the connection's settings.
    :param log: the hook's logger.
    """

    def __init__(self, settings: ClientSettings, log: Any) -> None:
        self.settings = settings
        self.log = log
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        """The ``requests`` session (created on first use, reused by every call)."""
        if self._session is None:
            import requests

            session = requests.Session()
            session.headers.update(self.settings.headers)
            session.auth = _NoNetrc()
            session.verify = self.settings.verify
            self._session = session
        return self._session

    def close(self) -> None:
        """Close the session (a later call opens a new one)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def send(
        self,
        method: str,
        path: str,
        *,
        budget: RetryBudget | None = None,
        recover: Callable[[Attempt], R | None] | None = None,
        **kwargs: Any,
    ) -> requests.Response | R:
        """
        The retry loop: send a request until it succeeds or the budget says stop.

        :param method: the HTTP method.
        :param path: the path under the base path (from ``validation.api_path``).
        :param budget: the call's budget; a new one from the settings' retry rule if not given.
        :param recover: called with each failed try before it is retried; what it returns (not ``None``)
            ends the call, what it raises ends it too (``create_batch``'s "did this POST create it?").
        :param kwargs: ``params``, ``json_body``, ``data``, ``headers``, ``stream``.
        :return: the successful response, or what ``recover`` returned.
        """
        budget = budget or RetryBudget(self.settings.retry)
        while True:
            attempt = self._attempt(method, path, **kwargs)
            if attempt.response is not None:
                return attempt.response  # type: ignore[no-any-return]
            if recover is not None and (recovered := recover(attempt)) is not None:
                return recovered
            self._pause(budget, attempt)

    def get_model(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        """Send a request (retried) and parse its JSON answer as ``model``."""
        response = self.send(method, path, **kwargs)
        return parse_model(
            model, response.content, response.status_code, response.headers, method=method, path=path
        )

    def pages(self, path: str, model: type[BaseModel], params: Mapping[str, Any]) -> Iterator[Any]:
        """The pages of a list endpoint (``data``, ``has_more``, ``last_id``), one request each."""
        after: str | None = None
        while True:
            page = self.get_model(
                model, "GET", path, params={**params, **({"after": after} if after else {})}
            )
            yield page
            if not page.has_more or not page.data:  # type: ignore[attr-defined]
                return
            next_after = page.last_id or page.data[-1].id  # type: ignore[attr-defined]
            if next_after == after:
                raise MKA1InvalidResponseError(
                    200, f"the list did not advance past {after!r} (has_more=true)", method="GET", path=path
                )
            after = next_after

    def iter_content(self, path: str) -> Iterator[bytes]:
        """
        The bytes of a file, in chunks. A connection lost mid-body is retried within the same budget and
        the transfer resumes where it stopped: file contents never change.
        """
        import requests
        import urllib3

        budget = RetryBudget(self.settings.retry)
        delivered = 0
        while True:
            response = self.send("GET", path, stream=True, budget=budget)
            skip = delivered
            try:
                for chunk in response.iter_content(CHUNK_SIZE):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    delivered += len(chunk)
                    yield chunk
                if skip:
                    raise MKA1InvalidResponseError(
                        response.status_code,
                        f"the file's content got shorter ({delivered - skip} bytes) on a resumed download",
                        method="GET",
                        path=path,
                        request_id=request_id_of(response.headers),
                    )
                return
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                attempt = Attempt(error=self._connection_error("GET", path, exc, after=delivered))
            finally:
                response.close()
            self._pause(budget, attempt)

    def _connection_error(
        self, method: str, path: str, exc: BaseException, after: int | None = None
    ) -> MKA1ConnectionError:
        settings = self.settings
        return connection_error(
            method, path, exc, where=settings.where, read_timeout=settings.timeout, after=after
        )

    def _pause(self, budget: RetryBudget, attempt: Attempt) -> None:
        """Sleep before the next try of ``attempt``'s call, or raise its error if the budget says stop."""
        delay = next_delay(self.log, budget, attempt)
        if delay is None:
            assert attempt.error is not None
            raise attempt.error
        time.sleep(delay)

    def _attempt(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> Attempt:
        import requests
        import urllib3

        settings = self.settings
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                settings.url(path),
                params=params,
                json=json_body,
                data=data,
                headers=headers,
                timeout=(settings.connect_timeout, settings.timeout),
                allow_redirects=False,
                stream=True,
            )
            ok = response.status_code < 300
            if ok and not stream:
                response.content  # noqa: B018 - read the body here, where a dropped connection is retried
        except requests.RequestException as exc:
            log_call(self.log, method, path, type(exc).__name__, None, started)
            failure = self._connection_error(method, path, exc)
            return Attempt(error=failure, sent=_may_have_been_sent(exc))
        log_call(self.log, method, path, response.status_code, request_id_of(response.headers), started)
        if ok:
            return Attempt(response=response, status=response.status_code, headers=response.headers)
        try:
            body = next(response.iter_content(ERROR_BODY_LIMIT), b"")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            body = b""
        finally:
            response.close()
        error = api_error(
            response.status_code, body, response.headers, method=method, path=path, secret=settings.api_key
        )
        return Attempt(error=error, status=response.status_code, headers=response.headers)


def _may_have_been_sent(exc: BaseException) -> bool:
    """Whether the request may have reached the server (``False`` only if no connection was made)."""
    import requests
    import urllib3

    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return not isinstance(reason, urllib3.exceptions.NewConnectionError)
    return True
