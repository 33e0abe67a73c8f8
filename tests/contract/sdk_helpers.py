"""Calls through the vendor SDK (``meetkai-mka1``): an answer it cannot read fails, naming the field."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import httpx
import pytest
from meetkai_mka1 import SDK, errors, models

from airflow_provider_batches.models import Batch, BatchPage, FileDeleted, FileObject, FilePage

T = TypeVar("T")
CHAT = "/v1/chat/completions"
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/images/generations")
TERMINAL = ("completed", "failed", "expired", "cancelled")
# Each SDK answer model, and the provider's model that must accept the same answer.
OUR_MODEL: dict[type, type] = {
    models.BatchObject: Batch,
    models.ListBatchesResponse: BatchPage,
    models.File: FileObject,
    models.FileList: FilePage,
    models.FileDeletionStatus: FileDeleted,
}


def new_sdk(base_url: str, key: str | None) -> SDK:
    """The SDK as a new user sets it up, without retries (a retried error would hide the first answer)."""
    return SDK(bearer_auth=key, server_url=base_url, retry_config=None)


def unread_fields(exc: errors.ResponseValidationError) -> str:
    """Each field the SDK's models refused in an answer, with pydantic's reason and the value sent."""
    cause = exc.cause
    if not hasattr(cause, "errors"):
        return str(exc)
    return "; ".join(
        f"field '{'.'.join(str(p) for p in e['loc'])}': {e['msg']} (got {e.get('input')!r})"
        for e in cause.errors()
    )


def ok(call: Callable[..., T], /, **kwargs: Any) -> T:
    """``call(**kwargs)`` through the SDK; an answer the SDK cannot read fails the test, naming the field.

    Each answer is read again by the provider's own model (the other direction of the contract).
    """
    name = getattr(call, "__qualname__", repr(call))
    try:
        answer = call(**kwargs)
    except errors.ResponseValidationError as exc:
        pytest.fail(f"The SDK cannot read the emulator's answer to {name}: {unread_fields(exc)}")
    except errors.SDKError as exc:
        pytest.fail(f"{name} failed through the SDK: {exc}")
    ours = OUR_MODEL.get(type(answer))
    if ours is not None:
        ours.model_validate(answer.model_dump(mode="json", by_alias=True, warnings=False))
    return answer


def refused(
    call: Callable[..., Any],
    status: int,
    error: type[errors.SDKError] = errors.SDKDefaultError,
    /,
    **kwargs: Any,
) -> errors.SDKError:
    """``call(**kwargs)`` must raise the SDK's ``error`` for HTTP ``status``, its body in the API's shape."""
    name = getattr(call, "__qualname__", repr(call))
    try:
        call(**kwargs)
    except errors.ResponseValidationError as exc:
        pytest.fail(f"The SDK cannot read the emulator's {status} answer to {name}: {unread_fields(exc)}")
    except errors.SDKError as exc:
        assert type(exc) is error, f"{name}: expected {error.__name__}, the SDK raised {exc!r}"
        assert exc.status_code == status, f"{name}: expected {status}, got {exc.status_code}: {exc.body}"
        body = json.loads(exc.body)
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
        return exc
    pytest.fail(f"{name} succeeded; expected a {status}")


def content(sdk: SDK, file_id: str, **kwargs: Any) -> tuple[bytes, str]:
    """The bytes and media type of a file's content, through the SDK (which refuses unlisted types)."""
    response: httpx.Response = ok(sdk.llm.files.content, file_id=file_id, **kwargs)
    try:
        return response.read(), response.headers["content-type"].split(";")[0]
    finally:
        response.close()


def end_user() -> str:
    return f"sdk-user-{uuid.uuid4().hex[:10]}"


def jsonl(n: int, endpoint: str = CHAT, fail: Iterable[int] = ()) -> bytes:
    failing = set(fail)
    lines = []
    for i in range(n):
        body: dict[str, Any] = {"model": "m", "input": f"q{i}", "prompt": f"p{i}"}
        if endpoint == CHAT:
            body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
        if i in failing:
            body["emulator_fail"] = True
        lines.append(json.dumps({"custom_id": f"r-{i}", "method": "POST", "url": endpoint, "body": body}))
    return ("\n".join(lines) + "\n").encode()


def upload(
    sdk: SDK, data: bytes, obo: str | None, name: str = "in.jsonl", purpose: str = "batch"
) -> models.File:
    return ok(
        sdk.llm.files.upload,
        file={"file_name": name, "content": data},
        purpose=purpose,
        x_on_behalf_of=obo,
    )


def wait(sdk: SDK, batch_id: str, obo: str | None, timeout: float = 20.0) -> list[models.BatchObject]:
    """Every state the SDK reads until the batch is terminal."""
    seen: list[models.BatchObject] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1].status not in TERMINAL:
        assert time.monotonic() < deadline, f"batch {batch_id} still {seen[-1].status}"
        seen.append(ok(sdk.llm.batches.get, batch_id=batch_id, x_on_behalf_of=obo))
        time.sleep(0.02)
    return seen
