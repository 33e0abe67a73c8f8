"""
Checks of what the provider sends, made before any request: ids, header values, file names, paths, page
sizes and the options of a batch. Every bad value raises :class:`MKA1InvalidInputError` naming it; this
module never sends anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from airflow_provider_batches.constants import (
    DEFAULT_BASE_PATH,
    DEFAULT_COMPLETION_WINDOW,
    FILE_PURPOSES,
    IDEMPOTENCY_METADATA_KEY,
    MAX_HEADER_VALUE_LENGTH,
)
from airflow_provider_batches.exceptions import MKA1InvalidInputError

# Opaque ids as the docs show them (file-abc123, file_abc123, batch_...): nothing that could change the
# path of a request (/, %, .., whitespace, control characters) and nothing unbounded.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_BASE_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def shown(value: object, limit: int = 60) -> str:
    """
    ``repr(value)`` for an error message, cut to ``limit`` characters (ending in ``...``). It hides
    nothing: never give it a secret.

    :param value: the value that was wrong.
    :param limit: the longest result, in characters.
    """
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
            f"Invalid {what} {shown(value)}: expected 1 to 128 ASCII letters, digits, '-' or '_', "
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
        raise MKA1InvalidInputError(f"Invalid {name} {shown(value)}: expected a non-empty string.")
    if len(value) > max_length:
        raise MKA1InvalidInputError(
            f"Invalid {name} {shown(value)}: {len(value)} characters, at most {max_length} allowed."
        )
    if not all(" " <= ch <= "~" for ch in value) or value != value.strip():
        raise MKA1InvalidInputError(
            f"Invalid {name} {shown(value)}: only printable ASCII is allowed, without control characters "
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
        raise MKA1InvalidInputError(f"Invalid filename {shown(value)}: expected a non-blank name.")
    if value == "blob":  # the browsers' placeholder: the API reads it as no filename at all
        raise MKA1InvalidInputError("Invalid filename 'blob': the API reads it as no filename; pass another.")
    if len(value) > 255 or not value.isprintable():
        raise MKA1InvalidInputError(
            f"Invalid filename {shown(value)}: at most 255 printable characters, no control characters."
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
        raise MKA1InvalidInputError(f"Invalid base_path {shown(value)}: expected a path like /api/v1/llm.")
    segments = [s for s in value.strip().split("/") if s]
    for segment in segments:
        if segment in (".", "..") or not _BASE_PATH_SEGMENT.fullmatch(segment):
            raise MKA1InvalidInputError(
                f"Invalid base_path {shown(value)}: expected a path like /api/v1/llm "
                "(letters, digits, '.', '_', '~', '-' between slashes)."
            )
    return "".join(f"/{s}" for s in segments)


def api_path(*segments: str) -> str:
    """
    Return the path of a call under the base path, each segment percent-encoded (``/batches/b_1``).

    Segments are our constants or ids that passed :func:`validate_id`; quoting them is a second fence.
    """
    return "".join("/" + quote(segment, safe="") for segment in segments)


def check_page_size(page_size: object, most: int) -> int:
    """
    Return ``page_size`` if it is an int from 1 to ``most``, else raise.

    :param page_size: items per request.
    :param most: the largest page the API serves.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= most:
        raise MKA1InvalidInputError(f"Invalid page_size {page_size!r}: expected 1 to {most}.")
    return page_size


def validate_purpose(purpose: object) -> str:
    """Return ``purpose`` if the Files API knows it (``batch`` for batch input files), else raise."""
    if purpose not in FILE_PURPOSES:
        raise MKA1InvalidInputError(f"Invalid purpose {purpose!r}: expected one of {sorted(FILE_PURPOSES)}.")
    return str(purpose)


def validate_order(order: object) -> str:
    """Return ``order`` if it is ``asc`` or ``desc``, else raise."""
    if order not in ("asc", "desc"):
        raise MKA1InvalidInputError(f"Invalid order {order!r}: expected 'asc' or 'desc'.")
    return str(order)


def batch_options(
    endpoint: str,
    completion_window: str = DEFAULT_COMPLETION_WINDOW,
    metadata: Mapping[str, str] | None = None,
    max_concurrency: int | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """
    The body of ``POST /batches`` but for ``input_file_id``, checked.

    :param endpoint: e.g. ``/v1/chat/completions``.
    :param completion_window: only ``24h`` is documented.
    :param metadata: str to str.
    :param max_concurrency: an int >= 1, or ``None``.
    :param idempotency_key: stored in ``metadata["airflow_idempotency_key"]``, if given.
    :raises MKA1InvalidInputError: naming the bad option.
    """
    if not isinstance(endpoint, str) or not endpoint.startswith("/") or not endpoint.isprintable():
        raise MKA1InvalidInputError(f"Invalid endpoint {endpoint!r}: expected e.g. '/v1/chat/completions'.")
    if not isinstance(completion_window, str) or not completion_window:
        raise MKA1InvalidInputError(f"Invalid completion_window {completion_window!r}: expected '24h'.")
    meta: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise MKA1InvalidInputError(f"Batch metadata maps str to str; got {key!r}: {value!r}.")
        meta[key] = value
    if idempotency_key is not None:
        meta[IDEMPOTENCY_METADATA_KEY] = validate_header_value(idempotency_key, "idempotency_key")
    body: dict[str, Any] = {"endpoint": endpoint, "completion_window": completion_window}
    if meta:
        body["metadata"] = meta
    if max_concurrency is not None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise MKA1InvalidInputError(f"Invalid max_concurrency {max_concurrency!r}: expected an int >= 1.")
        body["max_concurrency"] = max_concurrency
    return body
