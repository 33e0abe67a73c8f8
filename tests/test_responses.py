"""Reading error answers (responses.py), as pure functions: no server needed."""

from __future__ import annotations

import pytest

from airflow_provider_batches import responses
from airflow_provider_batches.exceptions import (
    MKA1APIError,
    MKA1AuthenticationError,
    MKA1BadRequestError,
    MKA1NotFoundError,
    MKA1RateLimitError,
    MKA1ServerError,
)
from airflow_provider_batches.responses import api_error, error_message


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"error": "Rate limit exceeded"}', "application/json", "Rate limit exceeded"),
        (
            b'{"error": {"message": "No batch found", "type": "invalid_request_error", "code": "not_found"}}',
            "application/json",
            "No batch found [not_found]",
        ),
        (
            b'{"error": {"message": "No such file", "type": "invalid_request_error", "code": 404}}',
            "application/json",
            "No such file [404]",
        ),
        (b'{"error": {"message": "Bad", "code": null}}', "application/json", "Bad"),
        (b'{"detail": "Not Found"}', "application/json", "Not Found"),
        (b'{"detail": [{"loc": ["x"], "msg": "bad"}]}', "application/json", '[{"loc":["x"],"msg":"bad"}]'),
        (b'{"message": "plain"}', None, "plain"),
        (b'{"weird": 1}', "application/json", '{"weird":1}'),
        (
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            "text/html",
            "502 Bad Gateway",
        ),
        (
            b"<html><body><h1>Oops</h1><script>x()</script><p>Try &amp; again</p></body></html>",
            None,
            "Oops Try & again",
        ),
        (b"upstream timed out\n", "text/plain", "upstream timed out"),
        (b"", None, "(empty body)"),
        (b"  \r\n ", None, "(empty body)"),
        (
            b"\x00\x01\xff\xfe\x00binary",
            "application/octet-stream",
            "(11 bytes of binary data, application/octet-stream)",
        ),
        (b"{not json", "application/json", "{not json"),
    ],
)
def test_error_message_shapes(body: bytes, content_type: str | None, expected: str) -> None:
    assert error_message(body, content_type) == expected


def test_error_message_is_bounded_and_never_holds_the_secret() -> None:
    long = error_message(b'{"error": "' + b"x" * 5000 + b'"}', "application/json")
    assert len(long) <= responses.MAX_MESSAGE_LENGTH and long.endswith("...")
    echoed = error_message(b'{"error": "invalid key sk-secret-1 given"}', None, secret="sk-secret-1")
    assert echoed == "invalid key *** given"
    # A key cut in half by the length bound must not leave its first half behind.
    cut = error_message(
        b"y" * 290 + b"sk-secret-12345678901234567890", None, secret="sk-secret-12345678901234567890"
    )
    assert "sk-secret" not in cut


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, MKA1BadRequestError),
        (401, MKA1AuthenticationError),
        (403, MKA1AuthenticationError),
        (404, MKA1NotFoundError),
        (409, MKA1BadRequestError),
        (422, MKA1BadRequestError),
        (429, MKA1RateLimitError),
        (500, MKA1ServerError),
        (503, MKA1ServerError),
        (302, MKA1APIError),
    ],
)
def test_api_error_class_and_message(status: int, cls: type[MKA1APIError]) -> None:
    headers = {
        "X-Request-ID": "0736e48b#12",
        "Content-Type": "application/json",
        "Location": "https://evil/x",
    }
    error = api_error(status, b'{"error": "boom"}', headers, method="GET", path="/batches/b_1")
    assert type(error) is cls
    assert (error.status_code, error.request_id, error.method, error.path) == (
        status,
        "0736e48b#12",
        "GET",
        "/batches/b_1",
    )
    text = str(error)
    assert text.startswith(f"MKA1 API GET /batches/b_1 answered {status} ")
    assert text.endswith("(request id 0736e48b#12)")
    if status < 400:
        assert "redirect to https://evil/x not followed" in text
    else:
        assert ": boom " in text


def test_api_error_reads_like_the_brief() -> None:
    error = api_error(
        404,
        b'{"error": "No batch found"}',
        {"x-request-id": "0736e48b-1c#12"},
        method="GET",
        path="/batches/batch_x",
    )
    assert (
        str(error)
        == "MKA1 API GET /batches/batch_x answered 404 Not Found: No batch found (request id 0736e48b-1c#12)"
    )
