"""
The transport-neutral rules of talking to the MKA1 API, shared by the sync (``requests``) and async
(``aiohttp``) paths of :class:`~airflow_provider_batches.hooks.mka1.MKA1Hook`.

This is the only place for: connection settings and their validation, id and header validation, URL
building, request headers, the retry rule and error-body parsing. Everything here is pure (no I/O), so
both paths call the same functions and the rules are tested once.
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import ipaddress
import json
import math
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ValidationError

from airflow_provider_batches import __version__
from airflow_provider_batches.exceptions import (
    MKA1APIError,
    MKA1AuthenticationError,
    MKA1BadRequestError,
    MKA1InvalidInputError,
    MKA1InvalidResponseError,
    MKA1NotFoundError,
    MKA1RateLimitError,
    MKA1ServerError,
)
from airflow_provider_batches.get_provider_info import (
    CONNECTION_TYPE,
    DEFAULT_BASE_PATH,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
)

USER_AGENT = f"airflow-provider-batches/{__version__}"
IDEMPOTENCY_METADATA_KEY = "airflow_idempotency_key"
REQUEST_ID_HEADER = "X-Request-ID"

DEFAULT_CONNECT_TIMEOUT = 10.0

# Opaque ids as the docs show them (file-abc123, file_abc123, batch_...): nothing that could change the
# path of a request (/, %, .., whitespace, control characters) and nothing unbounded.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_BASE_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")
MAX_HEADER_VALUE_LENGTH = 256
MAX_MESSAGE_LENGTH = 300


# ---------------------------------------------------------------------------------------------------
# Validation of what we send
# ---------------------------------------------------------------------------------------------------


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_id(value: object, what: str = "id") -> str:
    """
    Return ``value`` if it is a well-formed batch or file id, else raise before any request is sent.

    :param value: the id, e.g. ``batch_abc123`` or ``file-abc123``.
    :param what: what the id names, for the error message (``batch id``, ``file id``).
    :raises MKA1InvalidInputError: empty, too long (over 128), or any character other than ASCII
        letters, digits, ``-`` and ``_`` (or not starting with a letter or digit).
    """
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise MKA1InvalidInputError(
            f"Invalid {what} {_shown(value)}: expected 1 to 128 ASCII letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    return value


def validate_header_value(value: object, name: str, *, max_length: int = MAX_HEADER_VALUE_LENGTH) -> str:
    """
    Return ``value`` if it can be sent as the value of header ``name`` unchanged, else raise.

    Printable ASCII only, no leading or trailing whitespace, not empty, at most ``max_length``
    characters: a header value is never silently altered on its way to the server.

    :param value: the header value.
    :param name: the header's name, for the error message.
    :param max_length: the longest value accepted.
    """
    if not isinstance(value, str) or not value:
        raise MKA1InvalidInputError(f"Invalid {name} {_shown(value)}: expected a non-empty string.")
    if len(value) > max_length:
        raise MKA1InvalidInputError(
            f"Invalid {name} {_shown(value)}: {len(value)} characters, at most {max_length} allowed."
        )
    if not all(" " <= ch <= "~" for ch in value) or value != value.strip():
        raise MKA1InvalidInputError(
            f"Invalid {name} {_shown(value)}: only printable ASCII is allowed, without control characters "
            "or leading/trailing whitespace."
        )
    return value


def validate_on_behalf_of(value: object) -> str | None:
    """
    Return the end-user id to send as ``X-On-Behalf-Of``, ``None`` if there is none.

    :param value: the end-user id, ``None`` for none. An explicit ``""`` (a template that rendered empty)
        is refused rather than read as "no end user", which would act as the key's owner instead.
    """
    if value is None:
        return None
    return validate_header_value(value, "on_behalf_of (X-On-Behalf-Of)")


def validate_filename(value: object) -> str:
    """
    Return ``value`` as a multipart ``filename``: non-blank, printable, at most 255 characters.

    :param value: the name the uploaded file gets.
    """
    if not isinstance(value, str) or not value.strip():
        raise MKA1InvalidInputError(f"Invalid filename {_shown(value)}: expected a non-blank name.")
    if value == "blob":  # the browsers' placeholder: the API reads it as no filename at all
        raise MKA1InvalidInputError("Invalid filename 'blob': the API reads it as no filename; pass another.")
    if len(value) > 255 or not value.isprintable():
        raise MKA1InvalidInputError(
            f"Invalid filename {_shown(value)}: at most 255 printable characters, no control characters."
        )
    return value


def validate_base_path(value: object) -> str:
    """
    Return the API's base path normalised to ``/a/b`` (or ``""`` for the root).

    :param value: e.g. ``/api/v1/llm``; ``None`` means the default.
    """
    if value is None:
        value = DEFAULT_BASE_PATH
    if not isinstance(value, str):
        raise MKA1InvalidInputError(f"Invalid base_path {_shown(value)}: expected a path like /api/v1/llm.")
    segments = [s for s in value.strip().split("/") if s]
    for segment in segments:
        if segment in (".", "..") or not _BASE_PATH_SEGMENT.fullmatch(segment):
            raise MKA1InvalidInputError(
                f"Invalid base_path {_shown(value)}: expected a path like /api/v1/llm "
                "(letters, digits, '.', '_', '~', '-' between slashes)."
            )
    return "".join(f"/{s}" for s in segments)


def api_path(*segments: str) -> str:
    """
    Return the path of a call under the base path, each segment percent-encoded (``/batches/b_1``).

    Segments are our constants or ids that passed :func:`validate_id`; quoting them is a second fence.
    """
    return "".join("/" + quote(segment, safe="") for segment in segments)


# ---------------------------------------------------------------------------------------------------
# Connection settings
# ---------------------------------------------------------------------------------------------------


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    name = hostname.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RetryPolicy:
    """
    The retry rule, for both paths: which failures are retried, and how long to wait before the next try.

    Retried: 408, 429, 500, 502, 503, 504, and network errors or timeouts (``status=None``). The wait is
    the server's ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), capped at
    ``retry_after_cap``; without either, exponential backoff with full jitter:
    ``uniform(0, min(backoff_cap, backoff_base * 2 ** attempt))``. At most ``max_retries`` retries, and
    no retry that would end after ``total_timeout`` seconds from the first try.

    :param max_retries: retries after the first try (0: never retry).
    :param backoff_base: first backoff ceiling, in seconds.
    :param backoff_cap: largest backoff ceiling, in seconds.
    :param retry_after_cap: largest wait honoured from a ``Retry-After`` header, in seconds.
    :param total_timeout: time budget of one call and its retries, in seconds.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    total_timeout: float = 600.0

    def delay_for(
        self,
        attempt: int,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        *,
        elapsed: float = 0.0,
    ) -> float | None:
        """
        Seconds to wait before retrying a failed try, or ``None`` if it must not be retried.

        :param attempt: retries already made (0 after the first try failed).
        :param status: the answer's HTTP status, or ``None`` for a network error or timeout.
        :param headers: the answer's headers (for ``Retry-After``), if any.
        :param elapsed: seconds since the first try started.
        """
        if status is not None and not is_retryable_status(status):
            return None
        if attempt >= self.max_retries:
            return None
        delay = retry_after_seconds(headers)
        if delay is not None:
            delay = min(delay, self.retry_after_cap)
        else:
            # The exponent is bounded so that a huge max_retries cannot overflow a float.
            ceiling = min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 64))
            delay = random.uniform(0.0, ceiling)
        if elapsed + delay > self.total_timeout:
            return None
        return delay


RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    """Whether an answer with HTTP ``status`` is worth trying again."""
    return status in RETRYABLE_STATUSES


def may_have_been_processed(status: int | None, *, sent: bool) -> bool:
    """
    Whether a failed non-idempotent call (``POST /batches``) may have taken effect on the server.

    A 429 is answered before anything is processed, and a request that never left (connection refused,
    connect timeout) did nothing; anything else (a 5xx, a 408, a timeout or a drop while waiting for the
    answer) may have created the batch.

    :param status: the answer's status, or ``None`` if there was no answer.
    :param sent: whether the request may have reached the server (``False`` only if the connection
        was never established).
    """
    if status is None:
        return sent
    return status != HTTPStatus.TOO_MANY_REQUESTS


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """
    The wait the server asked for, in seconds: ``retry-after-ms``, else ``Retry-After`` as seconds or an
    HTTP date. ``None`` if absent or unreadable.

    :param headers: the answer's headers.
    :param now: the current Unix time (a parameter for tests).
    """
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True)
class ClientSettings:
    """
    Everything a transport needs to talk to the API, read and checked once from an Airflow connection.

    :param conn_id: the Airflow connection id (for messages).
    :param base_url: ``scheme://host[:port]``, without a path.
    :param base_path: path prefix of the API, e.g. ``/api/v1/llm``.
    :param api_key: the API key; never shown in ``repr``.
    :param on_behalf_of: end-user id for ``X-On-Behalf-Of``, or ``None``.
    :param timeout: read timeout of one try, in seconds.
    :param connect_timeout: connect timeout of one try, in seconds.
    :param verify: verify TLS certificates (``True``), don't (``False``), or the path of a CA bundle.
    :param retry: the retry rule.
    """

    conn_id: str
    base_url: str
    base_path: str
    api_key: str = field(repr=False)
    on_behalf_of: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    verify: bool | str = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def url(self, path: str) -> str:
        """The full URL of ``path`` (from :func:`api_path`)."""
        return f"{self.base_url}{self.base_path}{path}"

    @property
    def headers(self) -> dict[str, str]:
        """The headers of every request. They hold the API key: never log them."""
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": USER_AGENT,
        }
        if self.on_behalf_of:
            headers["X-On-Behalf-Of"] = self.on_behalf_of
        return headers

    @property
    def insecure(self) -> bool:
        """Whether the key would travel in clear text to another machine (``http://`` not to loopback)."""
        parts = urlsplit(self.base_url)
        return parts.scheme == "http" and not is_loopback(parts.hostname or "")


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    # Airflow 2's connection form stores custom fields as extra__<conn_type>__<name>.
    value = extras.get(name)
    if value is None or value == "":
        value = extras.get(f"extra__{CONNECTION_TYPE}__{name}")
    return None if value == "" else value


def _bad(conn_id: str, what: str) -> MKA1InvalidInputError:
    return MKA1InvalidInputError(f"MKA1 connection {conn_id!r}: {what}")


def _positive_number(conn_id: str, name: str, value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise _bad(conn_id, f"extra {name} must be a positive number of seconds, got {_shown(value)}.")
    return number


def _retries(conn_id: str, value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_RETRIES
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(conn_id, f"extra max_retries must be a whole number, got {_shown(value)}.") from None
    if number < 0:
        raise _bad(conn_id, f"extra max_retries must be 0 or more, got {number}.")
    return number


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _verify(conn_id: str, value: Any) -> bool | str:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
        if os.path.isfile(value):
            return value
    raise _bad(
        conn_id, f"extra verify must be true, false or the path of a CA bundle file, got {_shown(value)}."
    )


def _base_url(conn_id: str, host: str | None, port: int | None, scheme: Any) -> str:
    raw = (host or "").strip() or DEFAULT_BASE_URL
    if scheme is not None and str(scheme).lower() not in ("http", "https"):
        raise _bad(conn_id, f"extra scheme must be 'http' or 'https', got {_shown(scheme)}.")
    if "://" not in raw:
        # The URI form (mka1://:KEY@host:port) yields a host without a scheme.
        with contextlib.suppress(ValueError):
            raw = f"[{raw}]" if ipaddress.ip_address(raw).version == 6 else raw
        hostname = urlsplit(f"//{raw}").hostname or ""
        default = "http" if is_loopback(hostname) else "https"
        raw = f"{str(scheme).lower() if scheme else default}://{raw}"
    try:
        parts = urlsplit(raw)
        parsed_port = parts.port
    except ValueError as exc:
        raise _bad(conn_id, f"host {_shown(raw)} is not a valid URL ({exc}).") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad(conn_id, f"host {_shown(raw)} has scheme {parts.scheme!r}; use https:// (or http://).")
    if parts.username is not None or parts.password is not None:
        raise _bad(conn_id, "host must not contain credentials: put the API key in the password.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _bad(
            conn_id,
            f"host {_shown(raw)} must be a base URL such as {DEFAULT_BASE_URL}, without a path: "
            "put a path prefix in the extra base_path.",
        )
    hostname = parts.hostname or ""
    try:
        is_ipv6 = ipaddress.ip_address(hostname).version == 6
    except ValueError:
        is_ipv6 = False
        if not _HOSTNAME.fullmatch(hostname):
            raise _bad(conn_id, f"host {_shown(raw)} has no valid host name.") from None
    if parsed_port is None and port:
        parsed_port = int(port)
    netloc = f"[{hostname}]" if is_ipv6 else hostname
    if parsed_port is not None:
        netloc += f":{parsed_port}"
    return f"{parts.scheme.lower()}://{netloc}"


def settings_from_connection(
    conn_id: str,
    *,
    host: str | None,
    port: int | None,
    password: str | None,
    extras: Mapping[str, Any],
    on_behalf_of: str | None = None,
    timeout: float | None = None,
    retry_policy: RetryPolicy | None = None,
) -> ClientSettings:
    """
    Read and check the fields of an Airflow connection; every error names the field to fix.

    Host rules: empty means ``https://apigw.mka1.com``. A host without a scheme (as the URI form
    ``mka1://:KEY@127.0.0.1:8000`` gives) gets the extra ``scheme`` if set, else ``http`` for a loopback
    host and ``https`` for any other. The connection's port applies when the host has none. A path in the
    host is refused: the API's path prefix is the extra ``base_path``.

    Extras (plain or in Airflow 2's ``extra__mka1__<name>`` form): ``on_behalf_of``, ``timeout`` (read
    timeout, seconds), ``max_retries``, ``base_path``, ``verify`` (bool or a CA bundle path), ``scheme``,
    ``backoff_base`` (first retry backoff ceiling in seconds, default 0.5).

    :param conn_id: the connection id, for messages.
    :param host: the connection's host.
    :param port: the connection's port.
    :param password: the API key.
    :param extras: the connection's extra, deserialised.
    :param on_behalf_of: overrides the extra ``on_behalf_of`` when not ``None``.
    :param timeout: overrides the extra ``timeout`` when not ``None``.
    :param retry_policy: overrides the retry rule built from ``max_retries`` and ``backoff_base``.
    """
    api_key = (password or "").strip()
    if not api_key:
        raise _bad(conn_id, "no API key: set its password.")
    if not all(" " < ch <= "~" for ch in api_key):
        # Not shown: it is the secret.
        raise _bad(conn_id, "the API key (password) has characters that cannot be sent in a header.")
    read_timeout = _positive_number(
        conn_id, "timeout", timeout if timeout is not None else _extra(extras, "timeout"), DEFAULT_TIMEOUT
    )
    if retry_policy is None:
        retry_policy = RetryPolicy(
            max_retries=_retries(conn_id, _extra(extras, "max_retries")),
            backoff_base=_positive_number(conn_id, "backoff_base", _extra(extras, "backoff_base"), 0.5),
        )
    try:
        base_path = validate_base_path(_extra(extras, "base_path"))
        user = validate_on_behalf_of(
            on_behalf_of if on_behalf_of is not None else _extra(extras, "on_behalf_of")
        )
    except MKA1InvalidInputError as exc:
        raise _bad(conn_id, str(exc)) from None
    return ClientSettings(
        conn_id=conn_id,
        base_url=_base_url(conn_id, host, port, _extra(extras, "scheme")),
        base_path=base_path,
        api_key=api_key,
        on_behalf_of=user,
        timeout=read_timeout,
        connect_timeout=min(DEFAULT_CONNECT_TIMEOUT, read_timeout),
        verify=_verify(conn_id, _extra(extras, "verify")),
        retry=retry_policy,
    )


# ---------------------------------------------------------------------------------------------------
# Error answers
# ---------------------------------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SCRIPT = re.compile(r"<(script|style)[^>]*>.*?</\1>", re.IGNORECASE | re.DOTALL)


def _clean(text: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _message_from_json(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, str) and error.strip():
        return error
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        if isinstance(message, str) and message.strip():
            # File content errors carry an integer code (the status), the others a string.
            if isinstance(code, int) and not isinstance(code, bool):
                code = str(code)
            return (
                f"{message} [{code}]" if isinstance(code, str) and code and code not in message else message
            )
    for key in ("message", "detail"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if key == "detail" and value:
            return json.dumps(value, separators=(",", ":"), default=str)
    return None


def error_message(body: bytes, content_type: str | None = None, *, secret: str | None = None) -> str:
    """
    The server's message in an error answer, whatever the body's shape, cleaned and bounded.

    Reads ``{"error": "text"}``, ``{"error": {"message", "type", "code"}}``, ``{"message"}``,
    ``{"detail"}`` (FastAPI), other JSON (shown compactly), HTML (its ``<title>``, else its text), plain
    text, an empty or a binary body.

    :param body: the body (or its first bytes).
    :param content_type: the answer's ``Content-Type``.
    :param secret: a string that must not appear in the message (the API key), replaced by ``***``.
    """
    if not body or not body.strip():
        return "(empty body)"
    ctype = (content_type or "").lower()
    text = body.decode("utf-8", errors="replace")
    if secret:
        text = text.replace(secret, "***")
    if "\ufffd" in text and (b"\x00" in body or text.count("\ufffd") > len(text) // 10):
        return _clean(f"({len(body)} bytes of binary data, {content_type or 'no content type'})")
    message: str | None = None
    stripped = text.lstrip()
    if "json" in ctype or stripped[:1] in ("{", "["):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if data is not None:
            message = _message_from_json(data) or json.dumps(data, separators=(",", ":"), default=str)
    if message is None and ("html" in ctype or stripped[:1] == "<"):
        title = _TITLE.search(text)
        raw = title.group(1) if title else _TAG.sub(" ", _SCRIPT.sub(" ", text))
        message = html.unescape(raw)
    message = _clean(message if message is not None else text)
    if secret and secret in message:
        message = message.replace(secret, "***")
    return message or "(empty body)"


def error_class_for(status: int) -> type[MKA1APIError]:
    """The :class:`~airflow_provider_batches.exceptions.MKA1APIError` subclass for HTTP ``status``."""
    if status in (401, 403):
        return MKA1AuthenticationError
    if status == 404:
        return MKA1NotFoundError
    if status == 429:
        return MKA1RateLimitError
    if status >= 500:
        return MKA1ServerError
    if status >= 400:
        return MKA1BadRequestError
    return MKA1APIError


def api_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None,
    *,
    method: str,
    path: str,
    secret: str | None = None,
) -> MKA1APIError:
    """
    The exception for an error answer: class by status; message, request id and call filled in.

    A redirect is an error too: the hook does not follow redirects, so that the API key is only ever
    sent to the configured host.

    :param status: the answer's HTTP status.
    :param body: its body (or the first bytes of it).
    :param headers: its headers.
    :param method: the call's method.
    :param path: the call's path under the base path.
    :param secret: a string never to show (the API key).
    """
    message = error_message(body, _header(headers, "content-type"), secret=secret)
    if 300 <= status < 400:
        location = _clean(_header(headers, "location") or "nowhere", 200)
        message = f"redirect to {location} not followed (the API key is only sent to the configured host)"
    return error_class_for(status)(
        status, message, method=method, path=path, request_id=request_id_of(headers)
    )


def request_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The answer's ``X-Request-ID``, cleaned and bounded, or ``None``."""
    value = _header(headers, REQUEST_ID_HEADER)
    return _clean(value, 200) if value else None


ModelT = TypeVar("ModelT", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line summary of a pydantic error: how many problems, and the first one."""
    first: Mapping[str, Any] = exc.errors()[0] if exc.error_count() else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    count = exc.error_count()
    more = f" (and {count - 1} more)" if count > 1 else ""
    return _clean(f"{where}: {first.get('msg', 'invalid')}{more}", 200)


def parse_model(
    model: type[ModelT],
    body: bytes,
    status: int,
    headers: Mapping[str, str] | None,
    *,
    method: str,
    path: str,
) -> ModelT:
    """
    Parse a successful answer's JSON body as ``model``.

    :raises MKA1InvalidResponseError: the body is not JSON, or not the shape the API promises.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        # Tell "not JSON at all" (a proxy's page, a truncated body) from "JSON of the wrong shape".
        try:
            json.loads(body)
        except ValueError:
            problem = f"the body is not JSON: {_clean(body[:200].decode('utf-8', errors='replace'), 120)!r}"
        else:
            problem = f"the body is not a valid {model.__name__}: {describe_validation_error(exc)}"
    raise MKA1InvalidResponseError(
        status, problem, method=method, path=path, request_id=request_id_of(headers)
    )
