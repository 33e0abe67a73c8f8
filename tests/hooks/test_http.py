"""The transport-neutral rules of _http.py, as pure functions (no server needed)."""

from __future__ import annotations

import email.utils
import time

import pytest

from airflow_provider_batches import _http
from airflow_provider_batches._http import (
    RetryPolicy,
    api_error,
    api_path,
    error_message,
    may_have_been_processed,
    retry_after_seconds,
    settings_from_connection,
    validate_base_path,
    validate_header_value,
    validate_id,
)
from airflow_provider_batches.exceptions import (
    MKA1APIError,
    MKA1AuthenticationError,
    MKA1BadRequestError,
    MKA1InvalidInputError,
    MKA1NotFoundError,
    MKA1RateLimitError,
    MKA1ServerError,
)

HOSTILE_IDS = [
    "",
    " ",
    "../x",
    "..",
    "batch_1/../../files",
    "batch_1/cancel",
    "%2F",
    "batch_1%2Fcancel",
    "%2e%2e",
    "batch_1\r\nX-Injected: 1",
    "batch_1\n",
    "batch_1\r",
    "batch\x00abc",
    "batch\x1b",
    "batch 1",
    "\tbatch_1",
    "a" * 129,
    "b" * 10_000,
    "bätch_1",
    "批次",
    "batch\u2215abc",
    "batch\u200babc",
    "_batch",
    "-batch",
    "batch_1?limit=1",
    "batch_1#x",
    "batch:1",
    "https://evil.example/x",
    None,
    123,
]


@pytest.mark.parametrize("value", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_hostile_ids_are_refused(value: object) -> None:
    with pytest.raises(MKA1InvalidInputError, match="Invalid batch id"):
        validate_id(value, "batch id")


@pytest.mark.parametrize("value", ["file-abc123", "file_abc123", "batch_6f2a", "A", "x" * 128, "0-_"])
def test_documented_ids_are_accepted(value: str) -> None:
    assert validate_id(value) == value


HOSTILE_HEADER_VALUES = [
    "",
    " ",
    " user",
    "user ",
    "user\r\nX-Injected: 1",
    "user\nAuthorization: Bearer x",
    "user\r",
    "user\x00",
    "user\x07",
    "user\x7f",
    "üser",
    "user\u2028",
    "u" * 257,
    None,
    42,
]


@pytest.mark.parametrize("value", HOSTILE_HEADER_VALUES, ids=range(len(HOSTILE_HEADER_VALUES)))
def test_hostile_header_values_are_refused(value: object) -> None:
    with pytest.raises(MKA1InvalidInputError, match="on_behalf_of"):
        validate_header_value(value, "on_behalf_of")
    if value not in ("", None):
        with pytest.raises(MKA1InvalidInputError, match="on_behalf_of"):
            _http.validate_on_behalf_of(value)


def test_header_value_rules() -> None:
    assert validate_header_value("user-1 (eu)", "x") == "user-1 (eu)"
    assert _http.validate_on_behalf_of(None) is None
    with pytest.raises(MKA1InvalidInputError, match="on_behalf_of"):
        _http.validate_on_behalf_of("")  # a template that rendered empty is not "no end user"
    assert validate_header_value("u" * 256, "x") == "u" * 256


def test_api_path_quotes_every_segment() -> None:
    assert api_path("batches", "batch_1", "cancel") == "/batches/batch_1/cancel"
    assert api_path("files", "a/b") == "/files/a%2Fb"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "/api/v1/llm"), ("/api/v1/llm/", "/api/v1/llm"), ("v1", "/v1"), ("", ""), ("/", "")],
)
def test_base_path_normalised(value: str | None, expected: str) -> None:
    assert validate_base_path(value) == expected


@pytest.mark.parametrize("value", ["/api/../admin", "/a b", "/a%2Fb", "/a?x=1", 5])
def test_bad_base_path_refused(value: object) -> None:
    with pytest.raises(MKA1InvalidInputError, match="base_path"):
        validate_base_path(value)


# -- connection settings -------------------------------------------------------------------------


def _settings(
    host: str | None = "https://gw.example.com", port: int | None = None, password: str = "k-1", **extras
):
    return settings_from_connection("mka1_default", host=host, port=port, password=password, extras=extras)


@pytest.mark.parametrize(
    ("host", "port", "extras", "base_url"),
    [
        (None, None, {}, "https://apigw.mka1.com"),
        ("", None, {}, "https://apigw.mka1.com"),
        ("https://gw.example.com", None, {}, "https://gw.example.com"),
        ("https://gw.example.com/", 8443, {}, "https://gw.example.com:8443"),
        ("HTTP://127.0.0.1:8000", None, {}, "http://127.0.0.1:8000"),
        ("127.0.0.1", 8000, {}, "http://127.0.0.1:8000"),
        ("localhost", 8000, {}, "http://localhost:8000"),
        ("::1", None, {}, "http://[::1]"),
        ("gw.example.com", None, {}, "https://gw.example.com"),
        ("gw.example.com", 8080, {"scheme": "http"}, "http://gw.example.com:8080"),
        ("127.0.0.1", 8443, {"scheme": "https"}, "https://127.0.0.1:8443"),
    ],
)
def test_host_rules(host: str | None, port: int | None, extras: dict, base_url: str) -> None:
    assert _settings(host, port, **extras).base_url == base_url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"password": ""}, "connection 'mka1_default': no API key: set its password"),
        ({"password": "  "}, "no API key"),
        ({"host": "ftp://gw.example.com"}, "scheme 'ftp'"),
        ({"host": "https://user:pw@gw.example.com"}, "must not contain credentials"),
        ({"host": "https://gw.example.com/api/v1/llm"}, "without a path"),
        ({"host": "https://gw.example.com?x=1"}, "without a path"),
        ({"host": "https://gw.example.com:99999"}, "not a valid URL"),
        ({"host": "https://gw example.com"}, "no valid host name"),
        ({"timeout": "soon"}, "extra timeout must be a positive number"),
        ({"timeout": 0}, "extra timeout must be a positive number"),
        ({"timeout": True}, "extra timeout"),
        ({"max_retries": -1}, "extra max_retries must be 0 or more"),
        ({"max_retries": "many"}, "extra max_retries must be a whole number"),
        ({"max_retries": 1.5}, "extra max_retries must be a whole number"),
        ({"verify": "maybe"}, "extra verify must be true, false or the path of a CA bundle"),
        ({"verify": 3}, "extra verify"),
        ({"scheme": "ftp"}, "extra scheme"),
        ({"base_path": "/a/../b"}, "base_path"),
        ({"on_behalf_of": "u\r\nx"}, "on_behalf_of"),
    ],
)
def test_bad_connection_fields_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(MKA1InvalidInputError) as info:
        _settings(**kwargs)
    assert message in str(info.value)
    assert "mka1_default" in str(info.value)


def test_extras_as_strings_and_airflow2_prefix(tmp_path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    settings = _settings(
        timeout="2.5",
        max_retries="3",
        verify="false",
        extra__mka1__on_behalf_of="user-7",
        extra__mka1__base_path="/v2",
    )
    assert (settings.timeout, settings.retry.max_retries, settings.verify) == (2.5, 3, False)
    assert (settings.on_behalf_of, settings.base_path) == ("user-7", "/v2")
    assert settings.connect_timeout == 2.5
    assert _settings(verify=str(bundle)).verify == str(bundle)
    assert _settings(verify=True, timeout=None).timeout == 60.0


def test_settings_never_show_the_key() -> None:
    settings = _settings(password="sk-very-secret")
    assert "sk-very-secret" not in repr(settings)
    assert settings.headers["Authorization"] == "Bearer sk-very-secret"
    assert settings.headers["User-Agent"].startswith("airflow-provider-batches/")
    assert "X-On-Behalf-Of" not in settings.headers
    assert _settings(on_behalf_of="user-1").headers["X-On-Behalf-Of"] == "user-1"
    with pytest.raises(MKA1InvalidInputError) as info:
        _settings(password="sk-very\nsecret")
    assert "very" not in str(info.value)


def test_insecure_only_for_plain_http_to_another_machine() -> None:
    assert _settings("http://gw.example.com").insecure
    assert not _settings("http://127.0.0.1:8000").insecure
    assert not _settings("https://gw.example.com").insecure


# -- the retry rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, None])
def test_retried(status: int | None) -> None:
    delay = RetryPolicy(backoff_base=0.5).delay_for(0, status)
    assert delay is not None
    assert 0.0 <= delay <= 0.5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501, 505, 301])
def test_not_retried(status: int) -> None:
    assert RetryPolicy().delay_for(0, status) is None


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(max_retries=20, backoff_base=0.5, backoff_cap=30.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        delays = [policy.delay_for(attempt, 503) for _ in range(200)]
        assert all(d is not None and 0.0 <= d <= ceiling for d in delays)
        assert max(d for d in delays if d is not None) > ceiling / 2  # spread over the whole range


def test_bounded_by_retries_and_total_time() -> None:
    policy = RetryPolicy(max_retries=2, total_timeout=10.0)
    assert policy.delay_for(1, 503) is not None
    assert policy.delay_for(2, 503) is None
    assert policy.delay_for(0, 503, {"Retry-After": "5"}, elapsed=6.0) is None
    assert RetryPolicy(max_retries=0).delay_for(0, None) is None


def test_retry_after_honoured_and_capped() -> None:
    policy = RetryPolicy(retry_after_cap=60.0)
    assert policy.delay_for(0, 429, {"Retry-After": "7"}) == 7.0
    assert policy.delay_for(0, 429, {"retry-after": "3600"}) == 60.0
    assert policy.delay_for(0, 503, {"retry-after-ms": "250", "Retry-After": "9"}) == 0.25


def test_retry_after_forms() -> None:
    now = time.time()
    in_ten = email.utils.formatdate(now + 10, usegmt=True)
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"Retry-After": "1.5"}) == 1.5
    assert 8.0 <= (retry_after_seconds({"Retry-After": in_ten}, now=now) or 0) <= 10.0
    assert retry_after_seconds({"Retry-After": email.utils.formatdate(now - 10, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"RETRY-AFTER-MS": "1500"}) == 1.5
    for bad in ("soon", "-1", "nan", "inf", ""):
        assert retry_after_seconds({"Retry-After": bad}) is None
    assert retry_after_seconds({"retry-after-ms": "x"}) is None
    assert retry_after_seconds(None) is None


def test_what_a_failed_create_may_have_done() -> None:
    assert not may_have_been_processed(429, sent=True)
    assert not may_have_been_processed(None, sent=False)
    assert may_have_been_processed(None, sent=True)
    assert may_have_been_processed(502, sent=True)
    assert may_have_been_processed(408, sent=True)


# -- error bodies ----------------------------------------------------------------------------------


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
    assert len(long) <= _http.MAX_MESSAGE_LENGTH and long.endswith("...")
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
