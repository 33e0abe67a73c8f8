"""Helpers of the job tests: request files and lists, an operator with fast polling, reading results."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_batches.operators.mka1 import MKA1BatchJobOperator

ENDPOINT = "/v1/chat/completions"
FAST = {"poll_interval": 0.05, "max_poll_interval": 0.3}


def request_line(n: int, *, fail: Any = None, endpoint: str = ENDPOINT, content: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mka1-small", "messages": [{"role": "user", "content": content or f"q{n}"}]}
    if fail is not None:
        body["emulator_fail"] = fail
    return {"custom_id": f"req-{n}", "method": "POST", "url": endpoint, "body": body}


def write_jsonl(path: Path, lines: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def job(tmp_path: Path, **kwargs: Any) -> MKA1BatchJobOperator:
    for key, value in FAST.items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("result_path", str(tmp_path / "results"))
    kwargs.setdefault("scratch_dir", str(tmp_path / "scratch"))
    return MKA1BatchJobOperator(task_id=kwargs.pop("task_id", "answer"), **kwargs)


@pytest.fixture
def jsonl(tmp_path):
    def make(count: int, name: str = "requests.jsonl", **fails: Any) -> Path:
        chosen = {int(k[1:]): v for k, v in fails.items()}
        return write_jsonl(tmp_path / name, (request_line(n, fail=chosen.get(n)) for n in range(count)))

    return make
