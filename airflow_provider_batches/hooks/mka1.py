"""
:class:`MKA1Hook`: the MKA1 Batch and Files API for Airflow tasks (sync, ``requests``) and triggers
(async, ``aiohttp``).

The rules shared by both paths (settings, validation, URLs, headers, retries, error bodies) live in
:mod:`airflow_provider_batches._http`; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import ssl
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from airflow.providers.common.compat.sdk import BaseHook, mask_secret
from pydantic import BaseModel, ValidationError

from airflow_provider_batches import _http
from airflow_provider_batches._http import (
    IDEMPOTENCY_METADATA_KEY,
    ClientSettings,
    RetryPolicy,
    api_error,
    api_path,
    may_have_been_processed,
    parse_model,
    request_id_of,
    settings_from_connection,
    validate_filename,
    validate_id,
    validate_on_behalf_of,
)
from airflow_provider_batches.exceptions import (
    MKA1BadRequestError,
    MKA1ConnectionError,
    MKA1Error,
    MKA1InvalidInputError,
    MKA1InvalidResponseError,
)
from airflow_provider_batches.get_provider_info import (
    CONN_FIELDS,
    CONNECTION_TYPE,
    DEFAULT_CONN_ID,
    UI_FIELD_BEHAVIOUR,
)
from airflow_provider_batches.models import (
    NO_REATTACH_STATUSES,
    Batch,
    BatchPage,
    BatchStatus,
    DownloadResult,
    FileDeleted,
    FileObject,
    FilePage,
    ResultLine,
)

if TYPE_CHECKING:
    import aiohttp
    import requests
    import urllib3
    from airflow.providers.common.compat.sdk import ObjectStoragePath
else:
    # DAG files import this module on every parse, and these three cost over 100 ms to import: they are
    # imported on first use (a DAG file never uses them; a task or the triggerer does).
    class _OnFirstUse:
        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attribute: str) -> Any:
            return getattr(importlib.import_module(self._name), attribute)

    aiohttp, requests, urllib3 = _OnFirstUse("aiohttp"), _OnFirstUse("requests"), _OnFirstUse("urllib3")

ModelT = TypeVar("ModelT", bound=BaseModel)

CHUNK_SIZE = 1024 * 1024
REATTACH_MAX_AGE = 25 * 3600
"""How far back ``find_batch`` looks for a batch with the idempotency key, in seconds."""
REATTACH_MAX_PAGES = 10
"""How many pages of 100 batches ``find_batch`` reads at most."""
_ERROR_BODY_LIMIT = 64 * 1024
_CANCELLED = frozenset({BatchStatus.CANCELLING, BatchStatus.CANCELLED})
_PURPOSE = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})


def idempotency_key_for(context: Mapping[str, Any]) -> str:
    """
    The idempotency key of a task instance: the same for every try of one (dag, run, task, map index),
    different for any other. Pass it to :meth:`MKA1Hook.create_batch` so that a task retry reattaches to
    the batch an earlier try created.

    :param context: the task's Airflow context.
    :return: ``af-`` and 32 hex digits of a SHA-256.
    """
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        raise MKA1InvalidInputError("idempotency_key_for needs a task context with 'ti'.")
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    map_index = getattr(ti, "map_index", -1)
    identity = [ti.dag_id, run_id, ti.task_id, -1 if map_index is None else map_index]
    return "af-" + hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


class _NoNetrc:
    # Any auth callable stops requests from replacing our Authorization header with ~/.netrc credentials.
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


@dataclass
class _Attempt:
    """One try of a sync call: the response, or why there is none."""

    response: requests.Response | None = None
    error: MKA1Error | None = None
    status: int | None = None
    headers: Mapping[str, str] | None = None
    sent: bool = True


class _MultipartFile:
    """
    A ``multipart/form-data`` body of one form field and one file, streamed from the file in chunks.

    It has a length (so requests sends ``Content-Length``, not chunked encoding) and can be iterated
    again, re-opening the file, so that a retried upload sends the whole body again.
    """

    def __init__(self, opener: Callable[[], IO[bytes]], size: int, filename: str, fields: dict[str, str]):
        self.boundary = uuid.uuid4().hex
        self.size = size
        self._opener = opener
        # As browsers do: a quote would end the parameter, a backslash may be read as an escape.
        quoted = filename.replace("\\", "%5C").replace('"', "%22")
        head = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        )
        self._head = head.encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        sent = 0
        with self._opener() as source:
            while sent < self.size:
                chunk = source.read(min(CHUNK_SIZE, self.size - sent))
                if not chunk:
                    break
                sent += len(chunk)
                yield chunk
        if sent != self.size:
            raise MKA1InvalidInputError(
                f"The file shrank while it was uploaded ({sent} of {self.size} bytes)."
            )
        yield self._tail


def _resolve(value: object) -> tuple[Path, None] | tuple[None, ObjectStoragePath]:
    """
    ``(local path, None)`` or ``(None, object storage path)``. A ``file://`` ObjectStoragePath is a local
    path; a string with a scheme (``s3://bucket/key``) is an ObjectStoragePath, never a local file named
    after the URL. (On Airflow 2 an ObjectStoragePath is also a ``pathlib.Path``: hence the pair.)
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    try:
        if isinstance(value, str) and "://" in value:
            value = ObjectStoragePath(value)
        if isinstance(value, ObjectStoragePath):
            if value.protocol in ("file", "local"):
                return Path(value.path), None
            value.fs  # noqa: B018 - an unknown scheme fails here, not half-way through a transfer
            return None, value
    except ValueError as exc:  # e.g. "No filesystem registered for scheme ..."
        raise MKA1InvalidInputError(f"Cannot use {str(value)!r}: {exc}") from None
    if isinstance(value, (str, os.PathLike)):
        return Path(value), None
    raise MKA1InvalidInputError(
        f"Expected a local path or an ObjectStoragePath, got {type(value).__name__}: {value!r}"
    )


class _Sink:
    """Where a download goes: a temporary name next to the destination, moved into place on commit."""

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def commit(self) -> str:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class _LocalSink(_Sink):
    def __init__(self, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.destination = destination
        # One temporary name per destination: the retry of a killed download takes over (and truncates)
        # the part file it left, instead of leaving it behind for good. The lock, which dies with its
        # process, keeps two live downloads to the same destination from writing into each other.
        self.tmp = destination.with_name(f".{destination.name}.part")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MKA1InvalidInputError(f"Another download to {destination} is in progress.") from None
        os.ftruncate(fd, 0)
        self.file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)

    def commit(self) -> str:
        self.file.flush()
        os.fsync(self.file.fileno())
        os.replace(self.tmp, self.destination)  # still holding the lock
        self.file.close()
        with contextlib.suppress(OSError):
            # The rename itself is durable only once the directory is synced (not possible on every OS).
            dir_fd = os.open(self.destination.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return str(self.destination)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)  # before the lock goes, so as not to remove another try's file
        with contextlib.suppress(OSError):
            self.file.close()


class _ObjectStorageSink(_Sink):
    def __init__(self, destination: ObjectStoragePath) -> None:
        self.destination = destination
        self.tmp = destination.parent / f".{destination.name}.{uuid.uuid4().hex[:12]}.part"
        self.file = self.tmp.open("wb")

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)

    def commit(self) -> str:
        self.file.close()
        self.tmp.rename(self.destination)
        return str(self.destination)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(Exception):
            self.tmp.unlink()


# One aiohttp session per event loop and (connection, end user), shared by every hook on that loop: a
# triggerer running thousands of waits keeps one connection pool, not one per wait or per poll. Hooks
# lease it; the last one to release it (aclose) closes it, so no session outlives its waits.
@dataclass
class _SharedSession:
    session: aiohttp.ClientSession
    users: int = 0


_async_sessions: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str | None], _SharedSession]
] = weakref.WeakKeyDictionary()


def _lease_session(key: tuple[str, str | None]) -> _SharedSession:
    sessions = _async_sessions.setdefault(asyncio.get_running_loop(), {})
    shared = sessions.get(key)
    if shared is None or shared.session.closed:
        # 100 connections at a 50 ms round trip serve 2,000 polls a second (5,000 waits polling every 30 s
        # need about 170), and stay far below a triggerer's usual limit of 1,024 open files.
        connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=30, ttl_dns_cache=300)
        shared = sessions[key] = _SharedSession(aiohttp.ClientSession(connector=connector))
    shared.users += 1
    return shared


async def _release_session(key: tuple[str, str | None], shared: _SharedSession) -> None:
    shared.users -= 1
    if shared.users > 0:
        return
    sessions = _async_sessions.get(asyncio.get_running_loop(), {})
    if sessions.get(key) is shared:
        del sessions[key]
    await shared.session.close()


async def close_async_sessions() -> None:
    """Close every shared ``aiohttp`` session of the running event loop (for tests and clean shutdowns)."""
    sessions = _async_sessions.pop(asyncio.get_running_loop(), {})
    for shared in sessions.values():
        await shared.session.close()


class MKA1Hook(BaseHook):
    """
    Talk to the MKA1 Batch and Files API.

    The connection (type ``mka1``): host is the base URL (default ``https://apigw.mka1.com``), password
    is the API key; extras ``on_behalf_of``, ``timeout`` (read timeout, seconds, default 60),
    ``max_retries`` (default 5), ``base_path`` (default ``/api/v1/llm``), ``verify`` (TLS verification:
    true, false or a CA bundle path). A host without a scheme, as the URI form
    ``mka1://:KEY@127.0.0.1:8000`` gives, is ``http`` when it is loopback and ``https`` otherwise (the
    extra ``scheme`` overrides). See :func:`airflow_provider_batches._http.settings_from_connection`.

    Every call has connect and read timeouts and retries transient failures (408, 429, 5xx, network
    errors) with the server's ``Retry-After`` or exponential backoff with jitter. Redirects are not
    followed: the API key only ever goes to the configured host.

    :param mka1_conn_id: the Airflow connection id.
    :param on_behalf_of: end-user id sent as ``X-On-Behalf-Of``; ``None`` uses the connection's extra.
    :param timeout: read timeout in seconds; ``None`` uses the connection's extra.
    :param retry_policy: the retry rule; ``None`` builds it from the connection's extras.
    """

    conn_name_attr = "mka1_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONNECTION_TYPE
    hook_name = "MKA1"

    def __init__(
        self,
        mka1_conn_id: str = DEFAULT_CONN_ID,
        on_behalf_of: str | None = None,
        *,
        timeout: float | None = None,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mka1_conn_id = mka1_conn_id
        self.on_behalf_of = validate_on_behalf_of(on_behalf_of)
        self.timeout = timeout
        self.retry_policy = retry_policy
        self._settings: ClientSettings | None = None
        self._session: requests.Session | None = None
        self._ssl_context: ssl.SSLContext | None = None
        # (loop, session) this hook leased; a hook used on another loop leases that loop's session.
        self._lease: tuple[weakref.ref[asyncio.AbstractEventLoop], _SharedSession] | None = None

    # -- connection form (Airflow 2.11 to 3.1; 3.2+ reads the declarative form in get_provider_info) --

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields of the connection form, built from ``CONN_FIELDS``."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from wtforms import IntegerField, StringField
        from wtforms.validators import NumberRange, Optional

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            schema = spec["schema"]
            kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            options = {"description": spec.get("description", ""), "default": schema.get("default")}
            if "boolean" in kinds:
                # Text, not a checkbox: an unticked box saves nothing (so "false" could never be set),
                # and verify also takes the path of a CA bundle.
                options["description"] = options["description"] or "true, false or the path of a CA bundle"
                widgets[name] = StringField(spec["label"], widget=BS3TextFieldWidget(), **options)
            elif "integer" in kinds:
                validators = [Optional(), NumberRange(min=schema.get("minimum"))]
                widgets[name] = IntegerField(
                    spec["label"], validators=validators, widget=BS3TextFieldWidget(), **options
                )
            else:
                widgets[name] = StringField(spec["label"], widget=BS3TextFieldWidget(), **options)
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder fields, from ``UI_FIELD_BEHAVIOUR``."""
        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

    # -- settings ----------------------------------------------------------------------------------

    def _settings_from(self, conn: Any, extras: Mapping[str, Any]) -> ClientSettings:
        settings = settings_from_connection(
            self.mka1_conn_id,
            host=conn.host,
            port=conn.port,
            password=conn.password,
            extras=extras,
            on_behalf_of=self.on_behalf_of,
            timeout=self.timeout,
            retry_policy=self.retry_policy,
        )
        if settings.insecure:
            self.log.warning(
                "MKA1 connection %r sends the API key over plain http:// to %s, which is not this machine; "
                "use https://.",
                self.mka1_conn_id,
                settings.base_url,
            )
        return settings

    @property
    def settings(self) -> ClientSettings:
        """The connection's settings, read and checked once."""
        if self._settings is None:
            conn = self.get_connection(self.mka1_conn_id)
            settings = self._settings_from(conn, conn.extra_dejson)
            mask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    async def _asettings(self) -> ClientSettings:
        if self._settings is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.mka1_conn_id, hook=self)
            settings = self._settings_from(conn, await get_async_extra_dejson(conn))
            # mask_secret may talk to the supervisor synchronously: never on the event loop.
            await asyncio.to_thread(mask_secret, settings.api_key)
            self._settings = settings
        return self._settings

    # -- sync transport ----------------------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        """The hook's ``requests`` session (created on first use, reused by every call)."""
        if self._session is None:
            settings = self.settings
            session = requests.Session()
            session.headers.update(settings.headers)
            session.auth = _NoNetrc()
            session.verify = settings.verify
            self._session = session
        return self._session

    def close(self) -> None:
        """Close the hook's ``requests`` session (a later call opens a new one)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def _log_call(
        self, method: str, path: str, status: int | str, request_id: str | None, started: float
    ) -> None:
        self.log.debug(
            "MKA1 %s %s -> %s (request id %s, %.0f ms)",
            method,
            path,
            status,
            request_id or "-",
            (time.monotonic() - started) * 1000,
        )

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
    ) -> _Attempt:
        settings = self.settings
        session = self.get_conn()
        started = time.monotonic()
        try:
            response = session.request(
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
            self._log_call(method, path, type(exc).__name__, None, started)
            return _Attempt(error=_connection_error(method, path, exc), sent=_may_have_been_sent(exc))
        self._log_call(method, path, response.status_code, request_id_of(response.headers), started)
        if ok:
            return _Attempt(response=response, status=response.status_code, headers=response.headers)
        try:
            body = next(response.iter_content(_ERROR_BODY_LIMIT), b"")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            body = b""
        finally:
            response.close()
        error = api_error(
            response.status_code,
            body,
            response.headers,
            method=method,
            path=path,
            secret=settings.api_key,
        )
        return _Attempt(error=error, status=response.status_code, headers=response.headers)

    def _retry_delay(
        self,
        error: MKA1Error | None,
        status: int | None,
        headers: Mapping[str, str] | None,
        retries: int,
        started: float,
        policy: RetryPolicy,
    ) -> float | None:
        """The retry rule's wait before the next try (logged), or ``None``: give up."""
        delay = policy.delay_for(retries, status, headers, elapsed=time.monotonic() - started)
        if delay is not None:
            self.log.warning("%s; retry %d of %d in %.2f s.", error, retries + 1, policy.max_retries, delay)
        return delay

    def _call(
        self, method: str, path: str, *, policy: RetryPolicy | None = None, **kwargs: Any
    ) -> requests.Response:
        """Send a request, retrying transient failures; return the successful response or raise."""
        policy = policy or self.settings.retry
        started = time.monotonic()
        retries = 0
        while True:
            attempt = self._attempt(method, path, **kwargs)
            if attempt.response is not None:
                return attempt.response
            delay = self._retry_delay(
                attempt.error, attempt.status, attempt.headers, retries, started, policy
            )
            if delay is None:
                assert attempt.error is not None
                raise attempt.error
            retries += 1
            time.sleep(delay)

    def _get_model(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        response = self._call(method, path, **kwargs)
        return parse_model(
            model, response.content, response.status_code, response.headers, method=method, path=path
        )

    def _pages(self, path: str, model: type[BaseModel], params: dict[str, Any]) -> Iterator[Any]:
        after: str | None = None
        while True:
            page = self._get_model(
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

    # -- batches -----------------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        """
        Get a batch.

        :param batch_id: the batch's id.
        """
        path = api_path("batches", validate_id(batch_id, "batch id"))
        return self._get_model(Batch, "GET", path)

    def list_batches(self, page_size: int = 100) -> Iterator[Batch]:
        """
        Iterate over the batches of the key (and end user), newest first, page by page.

        :param page_size: batches per request, 1 to 100.
        """
        _check_page_size(page_size, 100)
        for page in self._pages(api_path("batches"), BatchPage, {"limit": page_size}):
            yield from page.data

    def find_batch(
        self,
        idempotency_key: str,
        *,
        input_file_id: str | None = None,
        endpoint: str | None = None,
    ) -> Batch | None:
        """
        The newest recent batch created with ``idempotency_key`` (in its metadata), or ``None``.

        Looks through batches created in the last 25 hours, at most 1,000.

        :param idempotency_key: the key given to :meth:`create_batch`.
        :param input_file_id: only a batch of this input file matches, if given.
        :param endpoint: only a batch for this endpoint matches, if given.
        """
        key = _http.validate_header_value(idempotency_key, "idempotency_key")
        cutoff = time.time() - REATTACH_MAX_AGE
        pages = self._pages(api_path("batches"), BatchPage, {"limit": 100})
        for _, page in zip(range(REATTACH_MAX_PAGES), pages, strict=False):
            for batch in page.data:
                if (
                    (batch.metadata or {}).get(IDEMPOTENCY_METADATA_KEY) == key
                    and input_file_id in (None, batch.input_file_id)
                    and endpoint in (None, batch.endpoint)
                ):
                    return batch
            if page.data and page.data[-1].created_at < cutoff:
                break
        return None

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        *,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        max_concurrency: int | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """
        Create a batch, or reattach to the one an earlier try created.

        With ``idempotency_key``, the batch carries it in ``metadata["airflow_idempotency_key"]``. Before
        creating, a recent batch with the same key, input file and endpoint is looked for and returned if
        it is not failed, expired or cancelled. ``POST /batches`` is never retried blindly: after a
        failure that may have created the batch (a 5xx, a timeout, a dropped connection) it is looked for
        again, and only if it is not found is the request sent again. Without a key such a failure is
        raised, not retried. A 429 or a refused connection is always retried.

        :param input_file_id: the uploaded JSONL file of requests.
        :param endpoint: e.g. ``/v1/chat/completions``; every line's ``url`` must equal it.
        :param completion_window: only ``24h`` is documented.
        :param metadata: up to the API's limits, str to str.
        :param max_concurrency: most requests of the batch in flight at once (newer API only).
        :param idempotency_key: e.g. from :func:`idempotency_key_for`.
        """
        body = {
            "input_file_id": validate_id(input_file_id, "input file id"),
            **self.batch_options(endpoint, completion_window, metadata, max_concurrency, idempotency_key),
        }
        if idempotency_key is not None:
            found = self.find_batch(idempotency_key, input_file_id=input_file_id, endpoint=endpoint)
            if found is not None and found.status not in NO_REATTACH_STATUSES:
                self.log.info(
                    "Reattached to batch %s (%s), created earlier with idempotency key %s.",
                    found.id,
                    found.status,
                    idempotency_key,
                )
                return found
            if found is not None:
                self.log.info(
                    "Batch %s has idempotency key %s but is %s: creating a new batch.",
                    found.id,
                    idempotency_key,
                    found.status,
                )
        path = api_path("batches")
        policy = self.settings.retry
        started = time.monotonic()
        retries = 0
        while True:
            attempt = self._attempt("POST", path, json_body=body)
            if attempt.response is not None:
                response = attempt.response
                batch = parse_model(
                    Batch, response.content, response.status_code, response.headers, method="POST", path=path
                )
                self.log.info(
                    "Created batch %s (%s) for input file %s.", batch.id, batch.status, input_file_id
                )
                return batch
            assert attempt.error is not None
            retryable = attempt.status is None or _http.is_retryable_status(attempt.status)
            if retryable and may_have_been_processed(attempt.status, sent=attempt.sent):
                if idempotency_key is None:
                    self.log.error(
                        "POST /batches failed in a way that may have created the batch anyway; not retried "
                        "because no idempotency key was given."
                    )
                    raise attempt.error
                self.log.warning("%s; looking for the batch it may have created.", attempt.error)
                found = self.find_batch(idempotency_key, input_file_id=input_file_id, endpoint=endpoint)
                if found is not None and found.status not in NO_REATTACH_STATUSES:
                    self.log.info("The failed request had created batch %s: reattached.", found.id)
                    return found
            delay = self._retry_delay(
                attempt.error, attempt.status, attempt.headers, retries, started, policy
            )
            if delay is None:
                raise attempt.error
            retries += 1
            time.sleep(delay)

    @staticmethod
    def batch_options(
        endpoint: str,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        max_concurrency: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """
        The body of ``POST /batches`` but for ``input_file_id``, checked: callers that upload the input
        first (the operator) call it before uploading, so that a bad option costs no request.

        :raises MKA1InvalidInputError: naming the bad option.
        """
        if not isinstance(endpoint, str) or not endpoint.startswith("/") or not endpoint.isprintable():
            raise MKA1InvalidInputError(
                f"Invalid endpoint {endpoint!r}: expected e.g. '/v1/chat/completions'."
            )
        if not isinstance(completion_window, str) or not completion_window:
            raise MKA1InvalidInputError(f"Invalid completion_window {completion_window!r}: expected '24h'.")
        meta: dict[str, str] = {}
        for key, value in (metadata or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise MKA1InvalidInputError(f"Batch metadata maps str to str; got {key!r}: {value!r}.")
            meta[key] = value
        if idempotency_key is not None:
            meta[IDEMPOTENCY_METADATA_KEY] = _http.validate_header_value(idempotency_key, "idempotency_key")
        body: dict[str, Any] = {"endpoint": endpoint, "completion_window": completion_window}
        if meta:
            body["metadata"] = meta
        if max_concurrency is not None:
            if (
                isinstance(max_concurrency, bool)
                or not isinstance(max_concurrency, int)
                or max_concurrency < 1
            ):
                raise MKA1InvalidInputError(
                    f"Invalid max_concurrency {max_concurrency!r}: expected an int >= 1."
                )
            body["max_concurrency"] = max_concurrency
        return body

    def cancel_batch(self, batch_id: str) -> Batch:
        """
        Cancel a batch; it becomes ``cancelling``, then ``cancelled``. A batch already cancelling or
        cancelled is returned as it is.

        :param batch_id: the batch's id.
        """
        path = api_path("batches", validate_id(batch_id, "batch id"), "cancel")
        try:
            return self._get_model(Batch, "POST", path)
        except MKA1BadRequestError:
            # A retried cancel (or a second one) finds the batch already on its way: that is success.
            batch = self.get_batch(batch_id)
            if batch.status not in _CANCELLED:
                raise
            return batch

    # -- files -------------------------------------------------------------------------------------

    def upload_file(
        self,
        source: str | os.PathLike[str] | ObjectStoragePath,
        *,
        purpose: str = "batch",
        filename: str | None = None,
    ) -> FileObject:
        """
        Upload a file, streamed from disk or object storage in 1 MiB chunks (never read whole), with a
        ``Content-Length`` known up front. A transient failure is retried like any call; one that struck
        after the server stored the file leaves an unused copy behind (a file, never a second batch).

        :param source: a local path, an Airflow ``ObjectStoragePath`` or an object storage URL.
        :param purpose: ``batch`` for batch input files.
        :param filename: the name the file gets; default the source's name.
        """
        if purpose not in _PURPOSE:
            raise MKA1InvalidInputError(f"Invalid purpose {purpose!r}: expected one of {sorted(_PURPOSE)}.")
        opener, size, name = _open_source(source)
        body = _MultipartFile(opener, size, validate_filename(filename or name), {"purpose": purpose})
        path = api_path("files")
        file = self._get_model(
            FileObject,
            "POST",
            path,
            data=body,
            headers={"Content-Type": body.content_type, "Content-Length": str(len(body))},
        )
        if file.bytes != size:
            raise MKA1InvalidResponseError(
                200, f"uploaded {size} bytes but file {file.id} has {file.bytes}", method="POST", path=path
            )
        self.log.info("Uploaded %s (%d bytes) as file %s.", name, size, file.id)
        return file

    def get_file(self, file_id: str) -> FileObject:
        """
        Get a file's metadata.

        :param file_id: the file's id.
        """
        return self._get_model(FileObject, "GET", api_path("files", validate_id(file_id, "file id")))

    def list_files(
        self, purpose: str | None = None, page_size: int = 1000, order: str | None = None
    ) -> Iterator[FileObject]:
        """
        Iterate over the files of the key (and end user), page by page.

        :param purpose: only files of this purpose, if given.
        :param page_size: files per request, 1 to 10,000.
        :param order: ``desc`` (newest first, the API's default) or ``asc``.
        """
        _check_page_size(page_size, 10000)
        params: dict[str, Any] = {"limit": page_size}
        if purpose is not None:
            if purpose not in _PURPOSE:
                raise MKA1InvalidInputError(
                    f"Invalid purpose {purpose!r}: expected one of {sorted(_PURPOSE)}."
                )
            params["purpose"] = purpose
        if order is not None:
            if order not in ("asc", "desc"):
                raise MKA1InvalidInputError(f"Invalid order {order!r}: expected 'asc' or 'desc'.")
            params["order"] = order
        for page in self._pages(api_path("files"), FilePage, params):
            yield from page.data

    def delete_file(self, file_id: str) -> FileDeleted:
        """
        Delete a file.

        :param file_id: the file's id.
        """
        return self._get_model(FileDeleted, "DELETE", api_path("files", validate_id(file_id, "file id")))

    def _iter_content(self, file_id: str) -> Iterator[bytes]:
        """
        The bytes of a file, in chunks. A connection lost mid-body is retried (by the retry rule) and the
        transfer resumes where it stopped: file contents never change.
        """
        path = api_path("files", validate_id(file_id, "file id"), "content")
        policy = self.settings.retry
        started = time.monotonic()
        retries = 0
        delivered = 0
        while True:
            response = self._call("GET", path, stream=True)
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
                error = _connection_error("GET", path, exc, after=delivered)
                delay = self._retry_delay(error, None, None, retries, started, policy)
                if delay is None:
                    raise error from exc
                retries += 1
            finally:
                response.close()
            time.sleep(delay)

    def download_file(
        self, file_id: str, destination: str | os.PathLike[str] | ObjectStoragePath
    ) -> DownloadResult:
        """
        Download a file's content, streamed, to a temporary name next to ``destination``, moved into place
        only once complete and its size matches the file's ``bytes``. A failed download leaves nothing.

        :param file_id: the file's id (e.g. a batch's ``output_file_id``).
        :param destination: a local path or an ``ObjectStoragePath``. An existing local directory receives
            the file under its API ``filename``.
        """
        validate_id(file_id, "file id")
        local, remote = _resolve(destination)
        file = self.get_file(file_id)
        sink: _Sink
        if local is not None:
            if local.is_dir():
                local = local / _safe_name(file.filename, file.id)
            sink = _LocalSink(local)
        else:
            sink = _ObjectStorageSink(remote)  # type: ignore[arg-type]
        size = newlines = 0
        last = b"\n"
        try:
            for chunk in self._iter_content(file_id):
                sink.write(chunk)
                size += len(chunk)
                newlines += chunk.count(b"\n")
                last = chunk[-1:]
            if size != file.bytes:
                raise MKA1InvalidResponseError(
                    200,
                    f"downloaded {size} bytes of file {file_id} but the API says it has {file.bytes}",
                    method="GET",
                    path=api_path("files", file_id, "content"),
                )
            where = sink.commit()
        except BaseException:
            sink.abort()
            raise
        lines = newlines + (1 if last != b"\n" else 0)
        self.log.info("Downloaded file %s to %s (%d bytes, %d lines).", file_id, where, size, lines)
        return DownloadResult(where, size, lines)

    def iter_results(self, file_id: str) -> Iterator[ResultLine]:
        """
        Stream an output or error file as result lines (blank lines skipped). Match each line to its
        request by ``custom_id``, never by position.

        :param file_id: a batch's ``output_file_id`` or ``error_file_id``.
        :raises MKA1InvalidResponseError: a line is not a result line; the message names its number.
        """
        for number, line in _lines(self._iter_content(file_id)):
            if not line.strip():
                continue
            try:
                yield ResultLine.model_validate_json(line)
            except ValidationError as exc:
                raise MKA1InvalidResponseError(
                    200,
                    f"line {number} of file {file_id} is not a result line: "
                    + _http.describe_validation_error(exc),
                    method="GET",
                    path=api_path("files", file_id, "content"),
                ) from None

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection with one cheap read (``GET /batches?limit=1``); never creates anything."""
        try:
            settings = self.settings
            self._call("GET", api_path("batches"), params={"limit": 1}, policy=RetryPolicy(max_retries=1))
        except Exception as exc:
            return False, str(exc)
        return True, f"Connected to the MKA1 API at {settings.base_url}{settings.base_path}."

    # -- async (for triggers) ----------------------------------------------------------------------

    def _ssl_for(self, settings: ClientSettings) -> ssl.SSLContext | bool:
        if isinstance(settings.verify, bool):
            return settings.verify
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=settings.verify)
        return self._ssl_context

    async def _acall(self, model: type[ModelT], method: str, path: str) -> ModelT:
        settings = await self._asettings()
        session = self._async_session(settings)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.timeout
        )
        policy = settings.retry
        first = time.monotonic()
        retries = 0
        while True:
            started = time.monotonic()
            status: int | None = None
            headers: Mapping[str, str] | None = None
            try:
                async with session.request(
                    method,
                    settings.url(path),
                    headers=settings.headers,
                    timeout=timeout,
                    allow_redirects=False,
                    ssl=self._ssl_for(settings),
                ) as response:
                    body = await (response.read() if response.status < 300 else _aread_bounded(response))
                    status, headers = response.status, response.headers
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._log_call(method, path, type(exc).__name__, None, started)
                error: MKA1Error = _connection_error(method, path, exc)
            else:
                self._log_call(method, path, status, request_id_of(headers), started)
                if status < 300:
                    return parse_model(model, body, status, headers, method=method, path=path)
                error = api_error(
                    status,
                    body,
                    headers,
                    method=method,
                    path=path,
                    secret=settings.api_key,
                )
            delay = self._retry_delay(error, status, headers, retries, first, policy)
            if delay is None:
                raise error
            retries += 1
            await asyncio.sleep(delay)

    async def aget_batch(self, batch_id: str) -> Batch:
        """
        Get a batch, without blocking the event loop.

        :param batch_id: the batch's id.
        """
        return await self._acall(Batch, "GET", api_path("batches", validate_id(batch_id, "batch id")))

    async def acancel_batch(self, batch_id: str) -> Batch:
        """
        Cancel a batch, without blocking the event loop.

        :param batch_id: the batch's id.
        """
        path = api_path("batches", validate_id(batch_id, "batch id"), "cancel")
        try:
            return await self._acall(Batch, "POST", path)
        except MKA1BadRequestError:
            batch = await self.aget_batch(batch_id)
            if batch.status not in _CANCELLED:
                raise
            return batch

    def _async_session(self, settings: ClientSettings) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        lease = self._lease
        if lease is None or lease[0]() is not loop or lease[1].session.closed:
            self._lease = lease = (
                weakref.ref(loop),
                _lease_session((self.mka1_conn_id, settings.on_behalf_of)),
            )
        return lease[1].session

    async def aclose(self) -> None:
        """
        Release this hook's share of the ``aiohttp`` session that every hook of the same connection and
        end user uses on the running loop. The last hook to release it closes it.
        """
        lease, self._lease = self._lease, None
        if lease is None or lease[0]() is not asyncio.get_running_loop() or self._settings is None:
            return
        await _release_session((self.mka1_conn_id, self._settings.on_behalf_of), lease[1])


# -- helpers -------------------------------------------------------------------------------------


def _check_page_size(page_size: int, most: int) -> None:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= most:
        raise MKA1InvalidInputError(f"Invalid page_size {page_size!r}: expected 1 to {most}.")


def _safe_name(filename: str | None, fallback: str) -> str:
    name = os.path.basename((filename or "").replace("\\", "/"))
    if not name or name in (".", "..") or not name.isprintable():
        return fallback
    return name


def _open_source(source: object) -> tuple[Callable[[], IO[bytes]], int, str]:
    """How to open ``source`` for reading, its size and its name."""
    local, remote = _resolve(source)
    target: Any = local if local is not None else remote
    if not target.is_file():
        raise MKA1InvalidInputError(f"No file to upload at {str(target)!r}.")
    try:
        # Opened once here so that an unreadable file fails now, not inside the HTTP request.
        with target.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
    except OSError as exc:
        raise MKA1InvalidInputError(f"Cannot read {str(target)!r}: {exc}") from None
    return (lambda: target.open("rb")), int(size), target.name


def _lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Split a stream of chunks into (1-based line number, line without its newline)."""
    number = 0
    pending: list[bytes] = []  # pieces of a line that spans chunks, joined once it ends
    for chunk in chunks:
        *complete, rest = chunk.split(b"\n")
        for line in complete:
            if pending:
                line, pending = b"".join([*pending, line]), []
            number += 1
            yield number, line
        if rest:
            pending.append(rest)
    if pending:
        yield number + 1, b"".join(pending)


async def _aread_bounded(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < _ERROR_BODY_LIMIT and (chunk := await response.content.read(_ERROR_BODY_LIMIT - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _may_have_been_sent(exc: BaseException) -> bool:
    """Whether the request may have reached the server (``False`` only if no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return not isinstance(reason, urllib3.exceptions.NewConnectionError)
    return True


def _connection_error(
    method: str, path: str, exc: BaseException, after: int | None = None
) -> MKA1ConnectionError:
    timed_out = isinstance(exc, (requests.Timeout, TimeoutError, urllib3.exceptions.TimeoutError))
    what = "timed out" if timed_out else "failed to connect or lost the connection"
    where = f" after {after} bytes of the body" if after else ""
    detail = _http._clean(str(exc) or type(exc).__name__, 200)
    return MKA1ConnectionError(
        f"MKA1 API {method} {path} {what}{where}: {type(exc).__name__}: {detail}", method=method, path=path
    )
