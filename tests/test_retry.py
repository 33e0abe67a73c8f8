"""The retry rule (retry.py), as pure functions: no server needed."""

from __future__ import annotations

import email.utils
import time

import pytest

from airflow_provider_batches.retry import RetryPolicy, may_have_been_processed, retry_after_seconds


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
