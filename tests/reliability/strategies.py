"""Hypothesis strategies for what a server (or a proxy in front of it) may answer."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import Any

from hypothesis import strategies as st

KNOWN_STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})

HUGE_INTS = st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64 + 7, -(2**63), 10**30, 10**300, 10**400])
ints = st.one_of(st.integers(min_value=-(2**40), max_value=2**40), HUGE_INTS)
floats = st.floats(allow_nan=True, allow_infinity=True)
texts = st.text(max_size=40)

json_scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(allow_nan=False, allow_infinity=False), texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)),
    max_leaves=12,
)

# Statuses the provider does not know: must never count as terminal.
unknown_statuses = st.one_of(
    texts.filter(lambda s: s not in KNOWN_STATUSES),
    st.sampled_from(
        ["COMPLETED", "Completed", "completed ", " failed", "done", "succeeded", "paused", "archived"]
    ),
)
any_status = st.one_of(st.sampled_from(KNOWN_STATUSES), unknown_statuses)

_OPTIONAL_TIMES = (
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


@st.composite
def request_counts(draw: st.DrawFn) -> Any:
    return draw(
        st.one_of(
            st.fixed_dictionaries({"total": ints, "completed": ints, "failed": ints}),
            st.fixed_dictionaries({"total": st.integers(0, 10**6)}, optional={"completed": ints}),
            json_values,
        )
    )


@st.composite
def valid_batches(draw: st.DrawFn, status: st.SearchStrategy[str] = any_status) -> dict[str, Any]:
    """A Batch as the API documents it (any status, optional fields sometimes null, extra fields)."""
    total = draw(st.integers(0, 10**6))
    completed = draw(st.integers(0, total))
    batch: dict[str, Any] = {
        "id": draw(st.from_regex(r"\Abatch[_-][A-Za-z0-9]{1,30}\Z")),
        "object": "batch",
        "endpoint": draw(st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/responses"])),
        "input_file_id": draw(st.from_regex(r"\Afile[_-][A-Za-z0-9]{1,30}\Z")),
        "completion_window": "24h",
        "status": draw(status),
        "created_at": draw(st.integers(0, 2**40)),
        "request_counts": {
            "total": total,
            "completed": completed,
            "failed": draw(st.integers(0, total - completed)),
        },
    }
    for name in _OPTIONAL_TIMES:
        if draw(st.booleans()):
            batch[name] = draw(st.one_of(st.none(), st.integers(0, 2**40)))
    for name in ("output_file_id", "error_file_id"):
        if draw(st.booleans()):
            batch[name] = draw(st.one_of(st.none(), st.from_regex(r"\Afile[_-][a-z0-9]{1,20}\Z")))
    if draw(st.booleans()):
        batch["metadata"] = draw(st.one_of(st.none(), st.dictionaries(texts, texts, max_size=3)))
    if draw(st.booleans()):
        batch["errors"] = draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {
                        "object": st.just("list"),
                        "data": st.lists(
                            st.fixed_dictionaries(
                                {"code": texts, "message": texts},
                                optional={
                                    "param": st.none() | texts,
                                    "line": st.none() | st.integers(0, 10**6),
                                },
                            ),
                            max_size=3,
                        ),
                    }
                ),
            )
        )
    if draw(st.booleans()):
        batch["max_concurrency"] = draw(st.one_of(st.none(), st.integers(1, 10**4)))
    # fields nobody has documented yet must be accepted
    batch.update(draw(st.dictionaries(st.from_regex(r"\Ax_[a-z]{1,10}\Z"), json_values, max_size=2)))
    return batch


@st.composite
def mangled_batches(draw: st.DrawFn) -> Any:
    """A Batch with a field dropped, of a wrong type, huge, or replaced: anything a broken proxy may send."""
    batch = draw(valid_batches())
    how = draw(st.sampled_from(["drop", "wrong-type", "huge", "counts", "not-a-dict", "nested-junk"]))
    if how == "drop":
        del batch[draw(st.sampled_from(sorted(batch)))]
    elif how == "wrong-type":
        batch[draw(st.sampled_from(sorted(batch)))] = draw(json_values)
    elif how == "huge":
        batch[draw(st.sampled_from(["created_at", "expires_at", "completed_at", "max_concurrency"]))] = draw(
            st.one_of(HUGE_INTS, floats)
        )
    elif how == "counts":
        batch["request_counts"] = draw(request_counts())
    elif how == "not-a-dict":
        return draw(json_values)
    else:
        batch[draw(texts)] = draw(json_values)
    return batch


def _http_date(offset: float) -> str:
    return formatdate(time.time() + offset, usegmt=True)


retry_after_values = st.one_of(
    st.integers(-(10**6), 10**12).map(str),
    st.sampled_from(
        ["0", "-1", "1e309", "inf", "-inf", "nan", "NaN", "", " ", "soon", "1.5", "0x10", "١٢", "10 "]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-(10**7), 10**7).map(_http_date),  # HTTP dates in the past and the future
    st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 32 Foo 2020"]),
    texts,
)
retry_after_ms_values = st.one_of(
    st.integers(-(10**9), 10**15).map(str),
    st.sampled_from(["", "abc", "1e400", "nan", "-0", "2.5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    texts,
)


@st.composite
def response_headers(draw: st.DrawFn) -> dict[str, str]:
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["Retry-After"] = draw(retry_after_values)
    if draw(st.booleans()):
        headers["retry-after-ms"] = draw(retry_after_ms_values)
    if draw(st.booleans()):
        headers["X-Request-ID"] = draw(st.one_of(texts, st.from_regex(r"\A[0-9a-f-]{8,36}#[0-9]{1,4}\Z")))
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(
                ["application/json", "text/html", "text/plain", "application/json; charset=utf-8", ""]
            )
        )
    return headers


error_bodies = st.one_of(
    st.builds(lambda m: json.dumps({"error": m}), texts),
    st.builds(
        lambda m, t, c: json.dumps({"error": {"message": m, "type": t, "code": c}}),
        texts,
        json_values,
        json_values,
    ),
    json_values.map(json.dumps),
    st.builds(lambda v: json.dumps({"error": v}), json_values),
    st.sampled_from(
        [
            "",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            '{"error": ',
            "null",
            "[]",
            '{"error": {"message": null}}',
        ]
    ),
    st.text(max_size=200),
)
error_body_bytes = st.one_of(
    error_bodies.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=200)
)

ANSWER_STATUSES = st.sampled_from(
    [200, 201, 204, 301, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504, 599]
)
