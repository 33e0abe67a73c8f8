"""Hypothesis over HTTP: odd answers (statuses, bodies, content types, Retry-After values) injected by the
emulator into ``GET /batches/{id}`` and read by the hook's sync and async paths. Only our documented
errors escape; a Batch comes back only from a 2xx; an unknown status is never terminal.

Fewer examples than the pure-function fuzzing (each is two HTTP round trips): 40, or 1,000 in the long run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_batches.exceptions import MKA1Error
from airflow_provider_batches.models import TERMINAL_STATUSES, Batch, BatchStatus
from airflow_provider_batches.retry import RetryPolicy
from tests.conftest import API_KEY
from tests.reliability.strategies import (
    error_bodies,
    json_values,
    mangled_batches,
    retry_after_values,
    valid_batches,
)
from tests.reliability.support import LONG, assert_no_secret, exception_texts

# What the hook makes of an answer does not depend on the Airflow version: CI fuzzes on one.
pytestmark = pytest.mark.once

HTTP_EXAMPLES = 1000 if LONG else 40
STATUSES = st.sampled_from([200, 201, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504])
# Retry-After is honoured up to the cap: capped tiny here so that an example never sleeps.
POLICY = RetryPolicy(max_retries=1, backoff_base=0.001, backoff_cap=0.001, retry_after_cap=0.001)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(
        st.one_of(
            valid_batches(),
            mangled_batches(),
            json_values,
            error_bodies,
            st.sampled_from(["", "<html><body>Bad gateway</body></html>", '{"id": "batch_x", "status": ']),
        ),
    )
    fault: dict[str, Any] = {"kind": "status", "status": draw(STATUSES)}
    if isinstance(body, str):
        fault["body"] = body
        fault["content_type"] = draw(st.sampled_from(["application/json", "text/html", "text/plain"]))
    else:
        fault["body"] = {"__json__": body} if body is None else body
    if draw(st.booleans()):
        fault["retry_after"] = draw(
            retry_after_values.filter(lambda v: v.isprintable() and v == v.strip() and v)
        )
    if draw(st.booleans()):
        fault["retry_after_ms"] = draw(st.floats(-1e6, 1e9, allow_nan=False))
    return fault


@pytest.fixture(scope="module")
def real_batch_id(emulator_session) -> str:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}
    file_id = requests.post(
        f"{emulator_session.api_url}/files",
        headers=headers,
        files={"file": ("f.jsonl", json.dumps(line) + "\n")},
        data={"purpose": "batch"},
        timeout=30,
    ).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    return requests.post(
        f"{emulator_session.api_url}/batches", headers=headers, json=body, timeout=30
    ).json()["id"]


SEEN: dict[str, int] = {"batch": 0, "error": 0}


def _check(outcome: Any, fault: dict[str, Any]) -> None:
    SEEN["error" if isinstance(outcome, BaseException) else "batch"] += 1
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, MKA1Error), f"{type(outcome).__name__} escaped: {outcome!r}"
        for text in exception_texts(outcome):
            assert_no_secret(API_KEY, text, where="an error")
        return
    assert isinstance(outcome, Batch)
    if not isinstance(outcome.status, BatchStatus):
        assert not outcome.is_terminal and outcome.status not in TERMINAL_STATUSES


@settings(
    max_examples=HTTP_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(fault=answers())
def test_any_answer_through_the_hook_sync_and_async(emulator, mka1_conn, real_batch_id, fault) -> None:
    from airflow_provider_batches.hooks.mka1 import MKA1Hook, close_async_sessions

    if isinstance(fault.get("body"), dict) and "__json__" in fault["body"]:
        fault = {**fault, "body": "null", "content_type": "application/json"}
    path = f"/api/v1/llm/batches/{real_batch_id}"
    hook = MKA1Hook(retry_policy=POLICY)

    emulator.clear_faults()
    emulator.add_fault(method="GET", path=path, count=1, **fault)
    try:
        outcome: Any = hook.get_batch(real_batch_id)
    except Exception as exc:
        outcome = exc
    _check(outcome, fault)

    emulator.clear_faults()
    emulator.add_fault(method="GET", path=path, count=1, **fault)

    async def aget() -> Any:
        try:
            return await MKA1Hook(retry_policy=POLICY).aget_batch(real_batch_id)
        except Exception as exc:
            return exc
        finally:
            await close_async_sessions()

    async_outcome = asyncio.run(aget())
    _check(async_outcome, fault)
    # both paths read the answer the same way
    assert type(async_outcome) is type(outcome), (outcome, async_outcome)
    emulator.clear_faults()


def test_the_fuzzing_saw_both_batches_and_errors() -> None:
    """Non-vacuity: the examples above did reach both ends (a parsed Batch, a raised error)."""
    if not SEEN["batch"] + SEEN["error"]:
        pytest.skip("the HTTP fuzzing did not run")
    assert SEEN["batch"] > 0 and SEEN["error"] > 0, SEEN
