"""
:class:`MKA1Hook`: the MKA1 Batch and Files API for Airflow tasks (sync) and triggers (async).

It holds the connection form, the connection's settings and the public calls, each a few lines over
the rules below it (:mod:`~airflow_provider_batches.validation`, :mod:`~airflow_provider_batches.retry`,
:mod:`~airflow_provider_batches.responses`, :mod:`~airflow_provider_batches.settings`) and the transports
(:mod:`~airflow_provider_batches.transport`); it never opens a socket itself, and the one reattach rule
(:func:`~airflow_provider_batches.reattach.may_reattach`) is applied here and nowhere else.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_provider_batches import files, reattach
from airflow_provider_batches.constants import (
    CONNECTION_TYPE,
    DEFAULT_COMPLETION_WINDOW,
    DEFAULT_CONN_ID,
    INPUT_FINGERPRINT_METADATA_KEY,
    ON_INPUT_CHANGE,
)
from airflow_provider_batches.exceptions import MKA1BadRequestError, MKA1InvalidInputError
from airflow_provider_batches.files import open_sink, resolve
from airflow_provider_batches.get_provider_info import UI_FIELD_BEHAVIOUR, connection_form_widgets
from airflow_provider_batches.models import (
    TERMINAL_STATUSES,
    Batch,
    BatchPage,
    BatchStatus,
    DownloadResult,
    FileDeleted,
    FileObject,
    FilePage,
    ResultLine,
)
from airflow_provider_batches.reattach import idempotency_key_for, may_reattach
from airflow_provider_batches.retry import RetryBudget, RetryPolicy
from airflow_provider_batches.settings import ClientSettings, explicit_settings, settings_from_connection
from airflow_provider_batches.transport import sessions
from airflow_provider_batches.transport.aio import AsyncTransport
from airflow_provider_batches.transport.sessions import active_lanes, close_async_sessions
from airflow_provider_batches.transport.sync import SyncTransport
from airflow_provider_batches.validation import (
    api_path,
    batch_options,
    check_page_size,
    validate_id,
    validate_on_behalf_of,
    validate_order,
    validate_purpose,
)

if TYPE_CHECKING:
    import requests
    from airflow.providers.common.compat.sdk import ObjectStoragePath

__all__ = ["MKA1Hook", "active_lanes", "close_async_sessions", "idempotency_key_for", "may_reattach"]

_CANCELLED = frozenset({BatchStatus.CANCELLING, BatchStatus.CANCELLED})


class MKA1Hook(BaseHook):
    """
    Talk to the MKA1 Batch and Files API.

    The connection (type ``mka1``): host is the base URL (empty: the MKA1 gateway), password is the API
    key; the extras, each with its default, are declared once in
    :data:`~airflow_provider_batches.get_provider_info.CONN_FIELDS` and read by
    :func:`~airflow_provider_batches.settings.settings_from_connection`.

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
        self._sync: SyncTransport | None = None
        self._async: AsyncTransport | None = None

    # -- connection form (Airflow 2.11 to 3.1; 3.2+ reads CONN_FIELDS from get_provider_info) -----------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields of the connection form, built from ``CONN_FIELDS``."""
        return connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder fields, from ``UI_FIELD_BEHAVIOUR``."""
        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

    # -- settings and transports -------------------------------------------------------------------

    def _settings_from(self, conn: Any, extras: Mapping[str, Any], *, named: bool = True) -> ClientSettings:
        settings = settings_from_connection(
            self.mka1_conn_id,
            named=named,
            host=conn.host,
            port=conn.port,
            password=conn.password,
            extras=extras,
            on_behalf_of=self.on_behalf_of,
            timeout=self.timeout,
            retry_policy=self.retry_policy,
        )
        return settings

    @classmethod
    def from_settings(cls, settings: ClientSettings) -> MKA1Hook:
        """
        A hook on ``settings`` instead of an Airflow connection: for code that holds a host and a key
        but no connection (a common-ai batch adapter gets only those two). The key is masked in logs.

        :param settings: e.g. from :meth:`from_credentials` or
            :func:`~airflow_provider_batches.settings.explicit_settings`.
        """
        hook = cls(
            mka1_conn_id=settings.conn_id,
            on_behalf_of=settings.on_behalf_of,
            timeout=settings.timeout,
            retry_policy=settings.retry,
        )
        hook._adopt(settings)
        mask_secret(settings.api_key)
        return hook

    @classmethod
    def from_credentials(cls, host: str | None, api_key: str, **options: Any) -> MKA1Hook:
        """
        A hook on a base URL and an API key, checked as a connection's would be.

        :param host: the base URL, e.g. ``https://apigw.mka1.com`` (``None``: the MKA1 gateway).
        :param api_key: the API key.
        :param options: any keyword of :func:`~airflow_provider_batches.settings.explicit_settings`:
            ``on_behalf_of``, ``timeout``, ``max_retries``, ``backoff_base``, ``base_path``, ``verify``,
            ``ca_bundle``, ``scheme``, ``retry_policy``, ``label``.
        """
        return cls.from_settings(explicit_settings(host, api_key, **options))

    def _adopt(self, settings: ClientSettings) -> ClientSettings:
        if settings.insecure:
            self.log.warning(
                "MKA1 connection %r sends the API key over plain http:// to %s, which is not this machine; "
                "use https://.",
                settings.conn_id,
                settings.base_url,
            )
        self._settings = settings
        return settings

    @property
    def settings(self) -> ClientSettings:
        """The connection's settings, read and checked once."""
        if self._settings is not None:
            return self._settings
        conn = self.get_connection(self.mka1_conn_id)
        settings = self._settings_from(conn, conn.extra_dejson)
        mask_secret(settings.api_key)
        return self._adopt(settings)

    async def _asettings(self) -> ClientSettings:
        if self._settings is not None:
            return self._settings
        if self._shares_settings:
            # The waits on one loop and connection read it once (lookup, checks, masking).
            read = sessions.settings_once(self.mka1_conn_id, self.on_behalf_of, self._aread_settings)
            return self._adopt(await read)
        return self._adopt(await self._aread_settings())

    @property
    def _shares_settings(self) -> bool:
        """Whether this hook's settings are the connection's as any other hook with its ``on_behalf_of``."""
        return self.timeout is None and self.retry_policy is None

    async def _aread_settings(self) -> ClientSettings:
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        conn = await get_async_connection(self.mka1_conn_id, hook=self)
        settings = self._settings_from(conn, await get_async_extra_dejson(conn))
        # mask_secret may talk to the supervisor synchronously: never on the event loop.
        await asyncio.to_thread(mask_secret, settings.api_key)
        return settings

    @property
    def _transport(self) -> SyncTransport:
        if self._sync is None:
            self._sync = SyncTransport(self.settings, self.log)
        return self._sync

    async def _atransport(self) -> AsyncTransport:
        settings = await self._asettings()
        if self._async is None:  # checked after the await: concurrent first calls share one transport
            self._async = AsyncTransport(
                settings, self.log, on_behalf_of=self.on_behalf_of, shares_settings=self._shares_settings
            )
        return self._async

    def get_conn(self) -> requests.Session:
        """The hook's ``requests`` session (created on first use, reused by every call)."""
        return self._transport.session

    def close(self) -> None:
        """Close the hook's ``requests`` session (a later call opens a new one)."""
        if self._sync is not None:
            self._sync.close()

    # -- batches -----------------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        """
        Get a batch.

        :param batch_id: the batch's id.
        """
        return self._transport.get_model(Batch, "GET", api_path("batches", validate_id(batch_id, "batch id")))

    def list_batches(self, page_size: int = 100) -> Iterator[Batch]:
        """
        Iterate over the batches of the key (and end user), newest first, page by page.

        :param page_size: batches per request, 1 to 100.
        """
        params = {"limit": check_page_size(page_size, 100)}
        for page in self._transport.pages(api_path("batches"), BatchPage, params):
            yield from page.data

    def find_batch(
        self, idempotency_key: str, *, input_file_id: str | None = None, endpoint: str | None = None
    ) -> Batch | None:
        """
        The newest recent batch created with ``idempotency_key`` (in its metadata), or ``None``.

        Looks through batches created in the last 25 hours, at most 1,000.

        :param idempotency_key: the key given to :meth:`create_batch`.
        :param input_file_id: only a batch of this input file matches, if given.
        :param endpoint: only a batch for this endpoint matches, if given.
        """
        return reattach.find(self._transport, idempotency_key, input_file_id=input_file_id, endpoint=endpoint)

    def find_reattachable(
        self,
        idempotency_key: str,
        *,
        input_file_id: str | None = None,
        endpoint: str | None = None,
        input_fingerprint: str | None = None,
        on_input_change: str = "cancel_and_resubmit",
    ) -> Batch | None:
        """
        The batch an earlier try created with ``idempotency_key``, if :func:`may_reattach` allows
        reusing it; ``None`` means "create a new one". Arguments as for :meth:`find_batch`; with
        ``input_fingerprint``, a batch made from another input is never reused: it is cancelled
        (``on_input_change="cancel_and_resubmit"``) or refused (``"fail"``: raises before anything is sent).
        """
        if on_input_change not in ON_INPUT_CHANGE:
            raise MKA1InvalidInputError(
                f"on_input_change must be one of {ON_INPUT_CHANGE}, got {on_input_change!r}."
            )

        def changed(batch: Batch) -> None:
            if on_input_change == "fail":
                raise MKA1InvalidInputError(
                    f"The input changed since an earlier try of this task created batch {batch.id}; "
                    "on_input_change='fail' refuses to submit it (cancel that batch and start a new run, or "
                    "use on_input_change='cancel_and_resubmit')."
                )
            if batch.status not in TERMINAL_STATUSES:
                self.log.warning("Cancelling batch %s: it was made from another input.", batch.id)
                self.cancel_batch(batch.id)

        return reattach.find_reusable(
            self._transport,
            idempotency_key,
            input_file_id=input_file_id,
            endpoint=endpoint,
            input_fingerprint=input_fingerprint,
            on_input_change=changed,
        )

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        *,
        completion_window: str = DEFAULT_COMPLETION_WINDOW,
        metadata: Mapping[str, str] | None = None,
        max_concurrency: int | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """
        Create a batch, or reattach to the one an earlier try created.

        With ``idempotency_key``, the batch carries it in ``metadata["airflow_idempotency_key"]``. Before
        creating, a recent batch with the same key, input file and endpoint is looked for and returned if
        :func:`may_reattach` allows it (not failed, expired, cancelling or cancelled). ``POST /batches``
        is never retried blindly: after a failure that may have created the batch (a 5xx, a timeout, a
        dropped connection) it is looked for again, and only if it is not found is the request sent
        again. Without a key such a failure is raised, not retried. A 429 or a refused connection is
        always retried.

        :param input_file_id: the uploaded JSONL file of requests.
        :param endpoint: e.g. ``/v1/chat/completions``; every line's ``url`` must equal it.
        :param completion_window: only ``24h`` is documented.
        :param metadata: up to the API's limits, str to str.
        :param max_concurrency: most requests of the batch in flight at once (newer API only).
        :param idempotency_key: e.g. from :func:`idempotency_key_for`.
        """
        return self.submit_batch(
            endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            metadata=metadata,
            max_concurrency=max_concurrency,
            idempotency_key=idempotency_key,
        )

    def submit_batch(
        self,
        endpoint: str,
        *,
        input_file_id: str | None = None,
        input_path: str | os.PathLike[str] | ObjectStoragePath | None = None,
        completion_window: str = DEFAULT_COMPLETION_WINDOW,
        metadata: Mapping[str, str] | None = None,
        max_concurrency: int | None = None,
        idempotency_key: str | None = None,
        input_fingerprint: str | None = None,
        on_input_change: str = "cancel_and_resubmit",
    ) -> Batch:
        """
        Create a batch from an uploaded file or from a file uploaded first, or reattach to the batch an
        earlier try created: what :class:`~airflow_provider_batches.operators.mka1.MKA1BatchOperator` does.

        The options are checked before anything is sent, and the earlier try's batch is looked for once,
        before the upload, so that a retry uploads nothing. Arguments as for :meth:`create_batch`, with
        exactly one of ``input_file_id`` and ``input_path`` (see :meth:`upload_file`). With a key, the
        batch records what it is made from (``input_fingerprint``; default the SHA-256 of ``input_path``'s
        content, or ``file:<input_file_id>``) and an earlier try's batch made from another input is not
        reattached to: see :meth:`find_reattachable` for ``on_input_change``.
        """
        if (input_file_id is None) == (input_path is None):
            raise MKA1InvalidInputError("submit_batch needs exactly one of input_file_id or input_path.")
        if input_file_id is not None:
            validate_id(input_file_id, "input file id")
        if idempotency_key is not None and input_fingerprint is None:
            input_fingerprint = f"file:{input_file_id}" if input_file_id else files.fingerprint(input_path)
        if input_fingerprint is not None:
            metadata = {**(metadata or {}), INPUT_FINGERPRINT_METADATA_KEY: input_fingerprint}
        options = batch_options(endpoint, completion_window, metadata, max_concurrency, idempotency_key)
        if idempotency_key is not None:
            # Looked for whatever its file: one made from another input is the changed-input case.
            found = self.find_reattachable(
                idempotency_key,
                endpoint=endpoint,
                input_fingerprint=input_fingerprint,
                on_input_change=on_input_change,
            )
            if found is not None:
                return found
        if input_file_id is None:
            input_file_id = self.upload_file(input_path, purpose="batch").id  # type: ignore[arg-type]
        return reattach.create(self._transport, input_file_id, options, idempotency_key)

    @staticmethod
    def batch_options(
        endpoint: str,
        completion_window: str = DEFAULT_COMPLETION_WINDOW,
        metadata: Mapping[str, str] | None = None,
        max_concurrency: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """
        The body of ``POST /batches`` but for ``input_file_id``, checked (see
        :func:`~airflow_provider_batches.validation.batch_options`), so that a bad option costs no request.

        :raises MKA1InvalidInputError: naming the bad option.
        """
        return batch_options(endpoint, completion_window, metadata, max_concurrency, idempotency_key)

    def cancel_batch(self, batch_id: str) -> Batch:
        """
        Cancel a batch; it becomes ``cancelling``, then ``cancelled``. A batch already cancelling or
        cancelled is returned as it is.

        :param batch_id: the batch's id.
        """
        path = api_path("batches", validate_id(batch_id, "batch id"), "cancel")
        try:
            return self._transport.get_model(Batch, "POST", path)
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
        return files.upload(self._transport, source, purpose, filename)

    def get_file(self, file_id: str) -> FileObject:
        """
        Get a file's metadata.

        :param file_id: the file's id.
        """
        return self._transport.get_model(
            FileObject, "GET", api_path("files", validate_id(file_id, "file id"))
        )

    def list_files(
        self, purpose: str | None = None, page_size: int = 1000, order: str | None = None
    ) -> Iterator[FileObject]:
        """
        Iterate over the files of the key (and end user), page by page.

        :param purpose: only files of this purpose, if given.
        :param page_size: files per request, 1 to 10,000.
        :param order: ``desc`` (newest first, the API's default) or ``asc``.
        """
        params: dict[str, Any] = {"limit": check_page_size(page_size, 10000)}
        if purpose is not None:
            params["purpose"] = validate_purpose(purpose)
        if order is not None:
            params["order"] = validate_order(order)
        for page in self._transport.pages(api_path("files"), FilePage, params):
            yield from page.data

    def delete_file(self, file_id: str) -> FileDeleted:
        """
        Delete a file.

        :param file_id: the file's id.
        """
        path = api_path("files", validate_id(file_id, "file id"))
        return self._transport.get_model(FileDeleted, "DELETE", path)

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
        target = resolve(destination)  # a bad destination fails before any request
        file = self.get_file(file_id)
        return files.download(self._transport, file, open_sink(target, file.filename, file.id))

    def iter_results(self, file_id: str) -> Iterator[ResultLine]:
        """
        Stream an output or error file as result lines (blank lines skipped). Match each line to its
        request by ``custom_id``, never by position.

        :param file_id: a batch's ``output_file_id`` or ``error_file_id``.
        :raises MKA1InvalidResponseError: a line is not a result line; the message names its number.
        """
        return files.result_lines(self._transport, validate_id(file_id, "file id"))

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the connection with one cheap read (``GET /batches?limit=1``); never creates anything. The
        messages name no connection id: Airflow's Test runs on a copy of the connection under a random one.
        """
        try:
            if self._settings is None:
                conn = self.get_connection(self.mka1_conn_id)
                self._settings = self._settings_from(conn, conn.extra_dejson, named=False)
                mask_secret(self._settings.api_key)
            settings = self._settings
            budget = RetryBudget(RetryPolicy(max_retries=1))
            self._transport.send("GET", api_path("batches"), params={"limit": 1}, budget=budget)
        except Exception as exc:
            return False, str(exc)
        return True, f"Connected to the MKA1 API at {settings.base_url}{settings.base_path}."

    # -- async (for triggers) ----------------------------------------------------------------------

    async def aget_batch(self, batch_id: str, *, urgent: bool = False) -> Batch:
        """
        Get a batch, without blocking the event loop; the call waits for admission in its lane.

        :param batch_id: the batch's id.
        :param urgent: the batch is about to end: this call gets a head start in its lane's queue.
        """
        path = api_path("batches", validate_id(batch_id, "batch id"))
        return await (await self._atransport()).call(Batch, "GET", path, urgent=urgent)

    async def acancel_batch(self, batch_id: str) -> Batch:
        """
        Cancel a batch, without blocking the event loop (as :meth:`cancel_batch`).

        :param batch_id: the batch's id.
        """
        path = api_path("batches", validate_id(batch_id, "batch id"), "cancel")
        try:
            return await (await self._atransport()).call(Batch, "POST", path, urgent=True)
        except MKA1BadRequestError:
            batch = await self.aget_batch(batch_id)
            if batch.status not in _CANCELLED:
                raise
            return batch

    async def aclose(self) -> None:
        """
        Release this hook's share of the ``aiohttp`` session that every hook of the same connection and
        end user uses on the running loop. The last hook to release it closes it.
        """
        if self._async is not None:
            await self._async.aclose()

    async def __aenter__(self) -> MKA1Hook:
        """``async with MKA1Hook() as hook:`` releases the hook's share of the session on the way out."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> MKA1Hook:
        """``with MKA1Hook() as hook:`` closes the hook's ``requests`` session on the way out."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
