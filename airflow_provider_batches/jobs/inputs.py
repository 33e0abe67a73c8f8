"""The requests of a job: read from a JSONL file or a list, checked line by line, never read whole.

A job's input is one of: a JSONL file of request lines (a local path, or any ``ObjectStoragePath``), a
list of request dicts, or a list of prompt strings. :func:`iter_request_lines` turns any of them into
``(line number, request line bytes, custom_id)``, checking every line on the way (valid JSON, a
non-empty ``custom_id``, ``method`` ``POST``, ``url`` equal to the endpoint, ``body`` an object). It
never checks uniqueness (that needs the on-disk index) and never sends anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from airflow_provider_batches.exceptions import MKA1InvalidInputError
from airflow_provider_batches.jobs import jsonl

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/images/generations", "/v1/responses")
PROMPT_ID_PREFIX = "prompt-"
_READ_BUFFER = 1024 * 1024


def _is_path(requests: object) -> bool:
    if isinstance(requests, (str, os.PathLike)):
        return True
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return isinstance(requests, ObjectStoragePath)


def describe_source(requests: object) -> str:
    """How error messages name the input: the path, or "the requests list"."""
    return f"{str(requests)!r}" if _is_path(requests) else "the requests list"


def check_requests_argument(requests: object, model: str | None, endpoint: str) -> None:
    """
    Refuse a ``requests`` argument that can never be read, before anything is opened or sent.

    :raises MKA1InvalidInputError: naming what is wrong.
    """
    if endpoint not in ENDPOINTS:
        raise MKA1InvalidInputError(f"Invalid endpoint {endpoint!r}: expected one of {', '.join(ENDPOINTS)}.")
    if _is_path(requests):
        if isinstance(requests, str) and not requests.strip():
            raise MKA1InvalidInputError("requests is an empty path.")
        return
    if isinstance(requests, (bytes, Mapping)) or not isinstance(requests, Sequence):
        raise MKA1InvalidInputError(
            "requests must be a JSONL path (local or object storage), a list of request dicts or a list "
            f"of prompt strings; got {type(requests).__name__}."
        )
    if not requests:
        raise MKA1InvalidInputError("requests is an empty list: a job needs at least one request.")
    if any(isinstance(item, str) for item in requests) and not model:
        raise MKA1InvalidInputError("Prompt strings need model= (the model every request is sent to).")


def iter_request_lines(
    requests: Any,
    endpoint: str,
    *,
    model: str | None = None,
    system_prompt: str | None = None,
    request_params: Mapping[str, Any] | None = None,
) -> Iterator[tuple[int, bytes, str]]:
    """
    Yield ``(line number, request line, custom_id)`` for every request, checked, in input order.

    A request line is one JSON object ending in ``\\n``: for a file, the line as it is in the file (its
    bytes, only the line ending normalised); for a list, the dict (``method`` and ``url`` filled in from
    ``endpoint`` where missing) or the prompt (a body built for ``endpoint``, ``custom_id``
    ``prompt-<position>``) serialised compactly. Blank lines of a file are skipped; line numbers count
    them, so an error names the line an editor shows.

    :param requests: a path or ``ObjectStoragePath`` of a JSONL file, or a list of dicts or strings.
    :param endpoint: the API every request calls.
    :param model: the model of prompt-string requests.
    :param system_prompt: a system message (chat), ``instructions`` (responses) for prompt strings.
    :param request_params: extra body fields merged into every prompt-string request's body.
    :raises MKA1InvalidInputError: for the first bad line, naming its number and what is wrong.
    """
    source = describe_source(requests)
    if _is_path(requests):
        for number, raw in _file_lines(requests):
            yield number, raw, _check_line(raw, number, endpoint, source)
        return
    for position, item in enumerate(requests):
        number = position + 1
        if isinstance(item, str):
            body = prompt_body(endpoint, item, model, system_prompt, request_params)
            item = {"custom_id": f"{PROMPT_ID_PREFIX}{position}", "body": body}
        elif not isinstance(item, Mapping):
            raise MKA1InvalidInputError(
                f"Request {number} of {source} is a {type(item).__name__}: expected a request dict "
                "({'custom_id': ..., 'body': {...}}) or a prompt string."
            )
        elif "body" not in item:
            raise MKA1InvalidInputError(f"Request {number} of {source} has no 'body'.")
        line = {"custom_id": item.get("custom_id"), "method": "POST", "url": endpoint, **item}
        try:
            raw = json.dumps(line, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise MKA1InvalidInputError(
                f"Request {number} of {source} is not JSON-serialisable: {exc}"
            ) from None
        raw += b"\n"
        yield number, raw, _check_line(raw, number, endpoint, source)


def prompt_body(
    endpoint: str,
    prompt: str,
    model: str | None,
    system_prompt: str | None,
    request_params: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The request body of one prompt string for ``endpoint``; ``request_params`` are merged last."""
    body: dict[str, Any] = {"model": model}
    if endpoint == "/v1/chat/completions":
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        body["messages"] = [*messages, {"role": "user", "content": prompt}]
    elif endpoint == "/v1/responses":
        body["input"] = prompt
        if system_prompt:
            body["instructions"] = system_prompt
    elif system_prompt:
        raise MKA1InvalidInputError(f"system_prompt has no meaning for {endpoint}.")
    elif endpoint == "/v1/embeddings":
        body["input"] = prompt
    else:
        body["prompt"] = prompt
    return {**body, **(request_params or {})}


def _file_lines(path: Any) -> Iterator[tuple[int, bytes]]:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(path, str) and "://" in path:
        path = ObjectStoragePath(path)
    try:
        handle = path.open("rb") if isinstance(path, ObjectStoragePath) else open(path, "rb", _READ_BUFFER)  # noqa: SIM115
    except (OSError, ValueError) as exc:
        raise MKA1InvalidInputError(f"Cannot read the requests file {str(path)!r}: {exc}") from None
    with handle:
        # readline, not iteration: Airflow 2's ObjectStoragePath file wrapper cannot be iterated.
        for number, raw in enumerate(iter(handle.readline, b""), 1):
            stripped = raw.rstrip(b"\r\n")
            if stripped.strip():
                yield number, stripped + b"\n"


def _check_line(raw: bytes, number: int, endpoint: str, source: str) -> str:
    try:
        line = jsonl.loads(raw)
    except jsonl.DECODE_ERRORS as exc:
        raise MKA1InvalidInputError(f"Line {number} of {source} is not valid JSON: {exc}.") from None
    custom_id = line.get("custom_id") if isinstance(line, dict) else None
    if (
        isinstance(custom_id, str)
        and custom_id
        and line.get("method") == "POST"
        and line.get("url") == endpoint
        and isinstance(line.get("body"), dict)
    ):
        return custom_id
    raise MKA1InvalidInputError(_what_is_wrong(line, f"Line {number} of {source}", endpoint))


def _what_is_wrong(line: Any, where: str, endpoint: str) -> str:
    if not isinstance(line, dict):
        return f"{where} is a JSON {type(line).__name__}, not an object."
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return f"{where} needs a non-empty string 'custom_id', got {custom_id!r}."
    if line.get("method") != "POST":
        return f"{where} ({custom_id}) has method {line.get('method')!r}: expected 'POST'."
    if line.get("url") != endpoint:
        return f"{where} ({custom_id}) has url {line.get('url')!r}: expected the job's endpoint {endpoint!r}."
    return f"{where} ({custom_id}) needs a JSON object 'body'."


def structured_output_params(endpoint: str, response_model: Any) -> dict[str, Any]:
    """
    The body fields that ask for output in ``response_model``'s JSON schema, for prompt strings:
    ``response_format`` (chat) or ``text.format`` (responses); nothing for other endpoints.
    """
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in response_model.__name__)[:64]
    schema = {"name": name, "schema": response_model.model_json_schema(), "strict": True}
    if endpoint == "/v1/chat/completions":
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    if endpoint == "/v1/responses":
        return {"text": {"format": {"type": "json_schema", **schema}}}
    return {}
