"""
Reading the API's answers, for both transports: the error an answer means (class, message, request id),
a successful body as a model, a network failure as an error. Pure: it never sends or reads a socket.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from airflow_provider_batches.constants import REQUEST_ID_HEADER
from airflow_provider_batches.exceptions import (
    MKA1APIError,
    MKA1AuthenticationError,
    MKA1BadRequestError,
    MKA1ConnectionError,
    MKA1InvalidResponseError,
    MKA1NotFoundError,
    MKA1RateLimitError,
    MKA1ServerError,
)
from airflow_provider_batches.network_errors import describe_network_error

ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_MESSAGE_LENGTH = 300


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """The value of header ``name`` (any case), or ``None``."""
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SCRIPT = re.compile(r"<(script|style)[^>]*>.*?</\1>", re.IGNORECASE | re.DOTALL)


def clean(text: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """
    ``text`` fit for one line of a message: each run of whitespace and non-printable characters becomes one
    space (none at either end), and a longer text is cut to ``limit`` characters, ending in ``...``.

    :param text: e.g. the server's message or an error body.
    :param limit: the longest result, in characters.
    """
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
        return clean(f"({len(body)} bytes of binary data, {content_type or 'no content type'})")
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
    message = clean(message if message is not None else text)
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
    message = error_message(body, header(headers, "content-type"), secret=secret)
    if 300 <= status < 400:
        location = clean(header(headers, "location") or "nowhere", 200)
        message = f"redirect to {location} not followed (the API key is only sent to the configured host)"
    return error_class_for(status)(
        status, message, method=method, path=path, request_id=request_id_of(headers)
    )


def request_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The answer's ``X-Request-ID``, cleaned and bounded, or ``None``."""
    value = header(headers, REQUEST_ID_HEADER)
    return clean(value, 200) if value else None


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line summary of a pydantic error: how many problems, and the first one."""
    first: Mapping[str, Any] = exc.errors()[0] if exc.error_count() else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    count = exc.error_count()
    more = f" (and {count - 1} more)" if count > 1 else ""
    return clean(f"{where}: {first.get('msg', 'invalid')}{more}", 200)


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
            problem = f"the body is not JSON: {clean(body[:200].decode('utf-8', errors='replace'), 120)!r}"
        else:
            problem = f"the body is not a valid {model.__name__}: {describe_validation_error(exc)}"
    raise MKA1InvalidResponseError(
        status, problem, method=method, path=path, request_id=request_id_of(headers)
    )


def connection_error(
    method: str,
    path: str,
    exc: BaseException,
    *,
    where: str,
    read_timeout: float | None = None,
    after: int | None = None,
) -> MKA1ConnectionError:
    """
    The error for a request that got no (complete) answer, said as a person would: ``MKA1 API GET /batches:
    could not connect to 127.0.0.1:8766: connection refused``.

    :param method: the call's method.
    :param path: the call's path under the base path.
    :param exc: the transport's exception.
    :param where: ``host:port`` of the API.
    :param read_timeout: the read timeout, seconds, named when the answer did not come in time.
    :param after: bytes of the body received before the failure, if any.
    """
    said = describe_network_error(exc, where, read_timeout)
    during = f" (after {after} bytes of the body)" if after else ""
    return MKA1ConnectionError(f"MKA1 API {method} {path}{during}: {said}", method=method, path=path)
