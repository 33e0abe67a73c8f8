"""Helpers of the emulator's own tests: request files, a per-owner client, the API's error shape."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests

from airflow_provider_batches.emulator import EmulatorHandle

KEY = "emu-test-key-a"
OTHER_KEY = "emu-test-key-b"
FAST = {"validation_seconds": 0.2, "lines_per_second": 200.0, "finalizing_seconds": 0.2}
CHAT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
REQUEST_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}#\d+$")


def jsonl(n: int, endpoint: str = CHAT, fail: Iterable[int] = (), prefix: str = "req") -> bytes:
    """``n`` valid request lines for ``endpoint``; the lines at the indexes in ``fail`` fail on purpose."""
    failing = set(fail)
    lines = []
    for i in range(n):
        if endpoint == "/v1/embeddings":
            body: dict[str, Any] = {"model": "emb", "input": f"text {i}"}
        elif endpoint == "/v1/images/generations":
            body = {"model": "img", "prompt": f"a cat number {i}"}
        elif endpoint == "/v1/responses":
            body = {"model": "m", "input": f"question {i}"}
        else:
            body = {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]}
        if i in failing:
            body["emulator_fail"] = True
        lines.append(
            json.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": endpoint, "body": body})
        )
    return ("\n".join(lines) + "\n").encode()


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


class Client:
    """One owner's view of the API: a key and an optional X-On-Behalf-Of."""

    def __init__(self, emu: EmulatorHandle, key: str = KEY, on_behalf_of: str | None = None) -> None:
        self.emu = emu
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        if on_behalf_of is not None:
            self.session.headers["X-On-Behalf-Of"] = on_behalf_of

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.emu.api_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def upload(self, content: bytes, filename: str = "input.jsonl", purpose: str = "batch") -> dict[str, Any]:
        r = self.post("/files", files={"file": (filename, content)}, data={"purpose": purpose})
        assert r.status_code == 200, r.text
        return r.json()

    def create(self, file_id: str, endpoint: str = CHAT, **extra: Any) -> dict[str, Any]:
        r = self.post(
            "/batches",
            json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **extra},
        )
        assert r.status_code == 200, r.text
        return r.json()

    def submit(self, content: bytes, endpoint: str = CHAT, **extra: Any) -> dict[str, Any]:
        return self.create(self.upload(content)["id"], endpoint, **extra)

    def batch(self, batch_id: str) -> dict[str, Any]:
        r = self.get(f"/batches/{batch_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(
        self, batch_id: str, statuses: Iterable[str] = TERMINAL, timeout: float = 15.0
    ) -> dict[str, Any]:
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            batch = self.batch(batch_id)
            if batch["status"] in wanted:
                return batch
            assert time.monotonic() < deadline, f"batch still {batch['status']} after {timeout}s"
            time.sleep(0.02)

    def content(self, file_id: str) -> bytes:
        r = self.get(f"/files/{file_id}/content")
        assert r.status_code == 200, r.text
        return r.content


def assert_error(r: requests.Response, status: int, param: str | None = None) -> dict[str, Any]:
    """``r`` is an error in the API's shape (an integer code on file content); returns its ``error``."""
    assert r.status_code == status, r.text
    assert REQUEST_ID.match(r.headers["X-Request-ID"])
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    if urlsplit(r.url).path.endswith("/content"):
        assert error["code"] == status, error  # the SDK types this route's codes as the integer status
    else:
        assert isinstance(error["code"], str) and error["code"]
    if param is not None:
        assert error["param"] == param, error
    return error
