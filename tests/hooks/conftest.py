"""Fixtures of the hook tests: a hook with quick retries, isolated per test, and input files."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import Batch, FileObject
from airflow_provider_batches.retry import RetryPolicy

# Quick retries so that the fault tests do not sleep; Retry-After up to 3 s is still honoured.
FAST_RETRIES = RetryPolicy(max_retries=5, backoff_base=0.01, backoff_cap=0.05, retry_after_cap=3.0)
API = "/api/v1/llm"


@pytest.fixture
def end_user() -> str:
    """A fresh end-user id: what a test creates is invisible to every other test on the shared emulator."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_hook(mka1_conn: str, end_user: str) -> Iterator[Callable[..., MKA1Hook]]:
    hooks: list[MKA1Hook] = []

    def make(**kwargs: object) -> MKA1Hook:
        kwargs.setdefault("on_behalf_of", end_user)
        kwargs.setdefault("retry_policy", FAST_RETRIES)
        hook = MKA1Hook(mka1_conn_id=mka1_conn, **kwargs)  # type: ignore[arg-type]
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()


@pytest.fixture
def hook(make_hook: Callable[..., MKA1Hook]) -> MKA1Hook:
    return make_hook()


def write_jsonl(
    path: Path, lines: int, endpoint: str = "/v1/chat/completions", fail: set[int] = frozenset()
) -> Path:
    with path.open("w") as handle:
        for i in range(lines):
            body: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": f"hello {i}"}]}
            if i in fail:
                body["emulator_fail"] = True
            handle.write(
                json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": endpoint, "body": body})
            )
            handle.write("\n")
    return path


@pytest.fixture
def memory_fs() -> Iterator[object]:
    """An fsspec memory filesystem behind ``memory://`` ObjectStoragePaths: object storage without a cloud."""
    from fsspec.implementations.memory import MemoryFileSystem

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]

    fs = MemoryFileSystem()
    fs.store.clear()
    attach(protocol="memory", fs=fs)
    yield fs
    fs.store.clear()


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "requests.jsonl", 5, fail={3})


@pytest.fixture
def uploaded(hook: MKA1Hook, input_file: Path) -> FileObject:
    return hook.upload_file(input_file)


def wait_terminal(hook: MKA1Hook, batch_id: str, timeout: float = 30.0) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = hook.get_batch(batch_id)
        if batch.is_terminal or time.monotonic() > deadline:
            return batch
        time.sleep(0.1)


@pytest.fixture
def finished_batch(hook: MKA1Hook, uploaded: FileObject) -> Batch:
    """A completed batch of 5 requests, one of which failed on purpose."""
    batch = wait_terminal(hook, hook.create_batch(uploaded.id, "/v1/chat/completions").id)
    assert batch.status == "completed", batch
    return batch
