"""Hypothesis: whatever a server or a proxy answers, only our documented errors escape the parsing, an
unknown status never counts as terminal and every retry delay is finite, >= 0 and within the cap.

The pure functions of ``retry`` and ``responses``, the models and the outcome rule are fuzzed
directly (``FUZZ_EXAMPLES`` each: 5,000 with MKA1_RELIABILITY=long, 200 otherwise); the hook's whole
answer handling over HTTP is fuzzed through the emulator's fault injection in ``test_fuzz_http.py``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from airflow_provider_batches import responses, retry
from airflow_provider_batches.exceptions import (
    MKA1APIError,
    MKA1AuthenticationError,
    MKA1BatchOutcomeError,
    MKA1Error,
    MKA1InvalidResponseError,
    MKA1NotFoundError,
    MKA1RateLimitError,
    MKA1ServerError,
    is_transient,
)
from airflow_provider_batches.models import TERMINAL_STATUSES, Batch, BatchStatus
from airflow_provider_batches.outcome import check_batch_outcome
from tests.reliability.strategies import (
    ANSWER_STATUSES,
    KNOWN_STATUSES,
    TERMINAL,
    error_body_bytes,
    json_values,
    mangled_batches,
    response_headers,
    retry_after_ms_values,
    retry_after_values,
    texts,
    unknown_statuses,
    valid_batches,
)
from tests.reliability.support import FUZZ_EXAMPLES, find_secret

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
SECRET = "mka1-fuzz-SECRET-7c1e0b5d93"


# ---- the retry rule --------------------------------------------------------------------------------


@FUZZ
@given(headers=response_headers(), now=st.floats(0, 2**33))
def test_retry_after_is_none_or_a_finite_non_negative_number(headers: dict[str, str], now: float) -> None:
    value = retry.retry_after_seconds(headers, now=now)
    assert value is None or (isinstance(value, float | int) and math.isfinite(value) and value >= 0), value


@FUZZ
@given(
    seconds=retry_after_values,
    ms=st.none() | retry_after_ms_values,
)
def test_retry_after_never_raises_on_odd_values(seconds: str, ms: str | None) -> None:
    headers = {"Retry-After": seconds} if ms is None else {"Retry-After": seconds, "retry-after-ms": ms}
    value = retry.retry_after_seconds(headers)
    assert value is None or (math.isfinite(value) and value >= 0)


policies = st.builds(
    retry.RetryPolicy,
    max_retries=st.integers(0, 20),
    backoff_base=st.floats(1e-4, 100),
    backoff_cap=st.floats(1e-3, 600),
    retry_after_cap=st.floats(0, 600),
    total_timeout=st.floats(0, 10_000),
)


@FUZZ
@given(
    policy=policies,
    attempt=st.integers(0, 200),
    status=st.none() | st.integers(100, 599),
    headers=response_headers(),
    elapsed=st.floats(0, 20_000),
)
def test_retry_delay_is_finite_non_negative_and_capped(policy, attempt, status, headers, elapsed) -> None:
    delay = policy.delay_for(attempt, status, headers, elapsed=elapsed)
    if status is not None and not retry.is_retryable_status(status):
        assert delay is None, f"status {status} is not retryable but got a delay {delay}"
    if attempt >= policy.max_retries:
        assert delay is None
    if delay is not None:
        assert math.isfinite(delay) and delay >= 0, delay
        assert delay <= max(policy.retry_after_cap, policy.backoff_cap) + 1e-9, (delay, policy)
        assert elapsed + delay <= policy.total_timeout + 1e-9


@FUZZ
@given(attempt=st.integers(0, 1023))
def test_backoff_without_retry_after_is_capped_even_after_many_attempts(attempt: int) -> None:
    policy = retry.RetryPolicy(max_retries=10**6, backoff_base=0.5, backoff_cap=30.0, total_timeout=math.inf)
    delay = policy.delay_for(attempt, 503, {})
    assert delay is not None and 0 <= delay <= 30.0


@pytest.mark.parametrize("attempt", [1024, 5000])
def test_backoff_after_a_thousand_retries_is_still_capped(attempt: int) -> None:
    policy = retry.RetryPolicy(max_retries=10**6, backoff_base=0.5, backoff_cap=30.0, total_timeout=math.inf)
    delay = policy.delay_for(attempt, 503, {})
    assert delay is not None and 0 <= delay <= 30.0


# ---- error answers ---------------------------------------------------------------------------------

EXPECTED_CLASS = {401: MKA1AuthenticationError, 403: MKA1AuthenticationError, 404: MKA1NotFoundError}


@FUZZ
@given(status=st.integers(100, 599) | ANSWER_STATUSES, body=error_body_bytes, headers=response_headers())
def test_error_answers_become_one_clear_api_error(status: int, body: bytes, headers: dict[str, str]) -> None:
    exc = responses.api_error(status, body, headers, method="GET", path="/batches/batch_abc", secret=SECRET)
    assert isinstance(exc, MKA1APIError)
    assert exc.status_code == status
    expected = EXPECTED_CLASS.get(status)
    if expected is None and status == 429:
        expected = MKA1RateLimitError
    if expected is None and status >= 500:
        expected = MKA1ServerError
    if expected is not None:
        assert isinstance(exc, expected)
    text = str(exc)
    assert str(status) in text
    assert isinstance(repr(exc), str)
    assert exc.message and len(exc.message) <= responses.MAX_MESSAGE_LENGTH
    assert exc.message.isprintable(), exc.message
    if any(ch.isprintable() and not ch.isspace() for ch in headers.get("X-Request-ID", "")):
        assert exc.request_id, "the answer's request id was lost"
        assert exc.request_id in text
    else:
        assert "request id" in text
    assert is_transient(exc) == retry.is_retryable_status(status)


@FUZZ
@given(
    before=texts,
    after=texts,
    shape=st.sampled_from(["flat", "nested", "detail", "html", "text", "bearer-echo"]),
    pad=st.integers(0, 400),
    status=st.sampled_from([400, 401, 403, 404, 429, 500, 502]),
)
def test_an_answer_that_echoes_the_key_never_shows_it(before, after, shape, pad, status) -> None:
    """A proxy that echoes the request (headers included) into its error page must not leak the key,
    wherever the key falls in the message, including across the cut at the message's length limit."""
    echoed = before + "x" * pad + SECRET + after
    if shape == "flat":
        body = json.dumps({"error": echoed})
    elif shape == "nested":
        body = json.dumps({"error": {"message": echoed, "type": "invalid_request_error"}})
    elif shape == "detail":
        body = json.dumps({"detail": [{"msg": echoed}]})
    elif shape == "html":
        body = f"<html><head><title>{echoed}</title></head><body>{echoed}</body></html>"
    elif shape == "text":
        body = echoed
    else:
        body = f"<html><body><pre>Authorization: Bearer {echoed}</pre></body></html>"
    exc = responses.api_error(status, body.encode(), {}, method="GET", path="/batches/b_1", secret=SECRET)
    for text in (str(exc), repr(exc), exc.message):
        hit = find_secret(SECRET, text)
        assert hit is None, f"{hit!r} of the key is in {text!r}"


CONTENT_TYPES = st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@FUZZ
@given(body=error_body_bytes, content_type=CONTENT_TYPES)
def test_error_message_is_always_a_short_printable_line(body: bytes, content_type: str | None) -> None:
    message = responses.error_message(body, content_type)
    assert isinstance(message, str) and message
    assert len(message) <= responses.MAX_MESSAGE_LENGTH
    assert message.isprintable()


@pytest.mark.parametrize("content_type", ["\x1b[31mred", "application/" + "x" * 1000])
def test_binary_error_body_with_an_odd_content_type_is_still_one_short_line(content_type: str) -> None:
    message = responses.error_message(b"\x00\x80\xff" * 10, content_type)
    assert len(message) <= responses.MAX_MESSAGE_LENGTH
    assert message.isprintable()


# ---- batches: parsing, statuses, the outcome rule, the poller --------------------------------------


def _parse(body: Any) -> Batch | None:
    """The models' documented failure is pydantic's ValidationError (the hook turns it into
    MKA1InvalidResponseError); anything else escaping is a bug."""
    try:
        return Batch.model_validate(body)
    except pydantic.ValidationError:
        return None


@FUZZ
@given(body=valid_batches())
def test_documented_batches_parse_and_terminal_means_the_four(body: dict[str, Any]) -> None:
    batch = Batch.model_validate(body)
    assert batch.is_terminal == (body["status"] in TERMINAL)
    if body["status"] not in KNOWN_STATUSES:
        assert not isinstance(batch.status, BatchStatus) or batch.status.value == body["status"]
        assert not batch.is_terminal
    # what the trigger puts in its event must come back as the same batch on the worker
    again = Batch.model_validate(json.loads(json.dumps(batch.model_dump(mode="json"))))
    assert again.status == batch.status and again.request_counts == batch.request_counts
    assert again.output_file_id == batch.output_file_id


@FUZZ
@given(body=valid_batches(status=unknown_statuses))
def test_unknown_statuses_are_never_terminal(body: dict[str, Any]) -> None:
    batch = Batch.model_validate(body)
    assert not batch.is_terminal
    assert batch.status not in TERMINAL_STATUSES
    assert check_batch_outcome(batch, 1.0) is False


@FUZZ
@given(body=mangled_batches(), ratio=st.floats(0, 1))
def test_mangled_batches_fail_only_in_documented_ways(body: Any, ratio: float) -> None:
    batch = _parse(body)
    assume(batch is not None)
    assert batch is not None
    _outcome_and_pace(batch, ratio)


@FUZZ
@given(body=valid_batches(), ratio=st.floats(0, 1))
def test_outcome_rule_and_pace_on_any_documented_batch(body: dict[str, Any], ratio: float) -> None:
    batch = Batch.model_validate(body)
    decided = _outcome_and_pace(batch, ratio)
    if decided:
        assert batch.status == BatchStatus.COMPLETED


@FUZZ
@given(
    status=st.sampled_from(["in_progress", "validating", "finalizing", "cancelling"]) | unknown_statuses,
    counts=st.lists(
        st.fixed_dictionaries(
            {
                "total": st.integers(-(10**3), 10**30) | st.just(10**400),
                "completed": st.integers(-(10**3), 10**30) | st.just(10**400),
                "failed": st.integers(-(10**3), 10**30),
            }
        ),
        min_size=1,
        max_size=5,
    ),
    step=st.floats(0, 10_000),
)
def test_poller_paces_any_progress_within_its_bounds(status, counts, step) -> None:
    """Counts that go backwards, past the total, negative or astronomically large: the next poll is
    still between poll_interval and max_poll_interval and nothing but our errors escapes."""
    from airflow_provider_batches.polling import BatchPoller

    clock = [1_000_000.0]
    poller = BatchPoller("batch_abc", poll_interval=1.0, max_poll_interval=60.0, clock=lambda: clock[0])
    for c in counts:
        batch = _parse({**_BASE, "status": status, "request_counts": c})
        if batch is None:
            continue
        poller.observe(batch)
        delay = poller.next_sleep()
        assert delay is not None and math.isfinite(delay) and 1.0 <= delay <= 60.0, delay
        clock[0] += step


_BASE = {
    "id": "batch_abc",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "input_file_id": "file-abc",
    "completion_window": "24h",
    "status": "in_progress",
    "created_at": 1_700_000_000,
    "request_counts": {"total": 10, "completed": 0, "failed": 0},
}


def _outcome_and_pace(batch: Batch, ratio: float) -> bool:
    from airflow_provider_batches.polling import BatchPoller

    try:
        decided = check_batch_outcome(batch, ratio)
    except MKA1BatchOutcomeError as exc:
        assert batch.is_terminal, f"{type(exc).__name__} for a batch that is {batch.status!r}"
        assert exc.batch is batch or exc.batch == batch
        str(exc), repr(exc)
        return False
    except MKA1Error:
        raise
    if not batch.is_terminal:
        assert decided is False, f"a {batch.status!r} batch was taken as finished"
    poller = BatchPoller(batch.id, poll_interval=1.0, max_poll_interval=60.0)
    poller.observe(batch)
    delay = poller.next_sleep()
    assert delay is not None and 1.0 <= delay <= 60.0
    return decided


BEYOND_FLOAT = 10**400  # valid JSON, and the models accept it


# Found by this suite (OverflowError in BatchPoller._pace and check_batch_outcome), fixed in c5f6591.
@pytest.mark.parametrize("where", ["poller", "outcome"])
def test_counts_beyond_float_range_fail_only_in_documented_ways(where: str) -> None:
    from airflow_provider_batches.polling import BatchPoller

    clock = [1_000_000.0]
    try:
        if where == "poller":
            poller = BatchPoller(
                "batch_abc", poll_interval=1.0, max_poll_interval=60.0, clock=lambda: clock[0]
            )
            for done in (0, 1):
                counts = {"total": BEYOND_FLOAT, "completed": done, "failed": 0}
                poller.observe(Batch.model_validate({**_BASE, "request_counts": counts}))
                clock[0] += 1
            delay = poller.next_sleep()
            assert delay is not None and 1.0 <= delay <= 60.0
        else:
            counts = {"total": 3, "completed": 0, "failed": BEYOND_FLOAT}
            check_batch_outcome(
                Batch.model_validate({**_BASE, "status": "completed", "request_counts": counts})
            )
    except (pydantic.ValidationError, MKA1Error):
        pass  # refusing such an answer is fine


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_the_four_terminal_statuses_are_decided(status: str) -> None:
    """Control: the outcome rule does decide every terminal status (so the fuzz above can fail)."""
    batch = Batch.model_validate({**_BASE, "status": status})
    if status == "completed":
        assert check_batch_outcome(batch) is True
    else:
        with pytest.raises(MKA1BatchOutcomeError):
            check_batch_outcome(batch)


raw_bodies = st.one_of(
    valid_batches().map(json.dumps),
    mangled_batches().map(lambda b: json.dumps(b)),
    json_values.map(json.dumps),
    valid_batches().map(lambda b: json.dumps(b)[: len(json.dumps(b)) // 2]),  # truncated
    error_body_bytes.map(lambda b: b.decode("latin-1")),
)


@FUZZ
@given(body=raw_bodies, status=st.sampled_from([200, 201, 202]), headers=response_headers())
def test_the_hooks_parsing_of_any_answer_body_raises_only_invalid_response(
    body: str, status, headers
) -> None:
    """``responses.parse_model`` is what both the sync and the async path of the hook call on a 2xx body."""
    raw = body.encode("utf-8", "surrogatepass")
    try:
        batch = responses.parse_model(Batch, raw, status, headers, method="GET", path="/batches/batch_abc")
    except MKA1InvalidResponseError as exc:
        assert exc.status_code == status
        assert str(status) in str(exc) and exc.message.isprintable()
        assert not is_transient(exc)
        return
    assert isinstance(batch, Batch)
    assert batch.is_terminal == (batch.status in TERMINAL_STATUSES)
    if not isinstance(batch.status, BatchStatus):
        assert not batch.is_terminal


@FUZZ
@given(body=json_values)
def test_random_json_is_a_batch_or_a_validation_error(body: Any) -> None:
    batch = _parse(body)
    if batch is not None:
        assert isinstance(batch.id, str) and isinstance(batch.status, BatchStatus | str)
