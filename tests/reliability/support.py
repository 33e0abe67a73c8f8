"""What the reliability tests share: the long/CI switch, the secret scanner, a minimal task context."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# `make reliability` sets MKA1_RELIABILITY=long: thousands of fuzz examples and the slow matrix settings.
# Unset (CI's `make test`): the same assertions, a few hundred examples and the fastest settings.
LONG = os.environ.get("MKA1_RELIABILITY", "").strip().lower() == "long"
FUZZ_EXAMPLES = 5000 if LONG else 200


def secret_fragments(secret: str, width: int = 10) -> list[str]:
    """The secret and every ``width``-character window of it: a truncated or wrapped copy is a leak too."""
    if len(secret) <= width:
        return [secret]
    return [secret, *(secret[i : i + width] for i in range(len(secret) - width + 1))]


def find_secret(secret: str, text: str) -> str | None:
    """The first fragment of ``secret`` found in ``text``, or ``None``."""
    for fragment in secret_fragments(secret):
        if fragment in text:
            return fragment
    return None


def assert_no_secret(secret: str, *things: object, where: str = "") -> None:
    """Fail if ``secret`` (or a 10-character piece of it) is in the str() or repr() of any of ``things``."""
    for thing in things:
        for text in {str(thing), repr(thing)}:
            hit = find_secret(secret, text)
            assert hit is None, (
                f"the API key leaked{' into ' + where if where else ''}: {hit!r} in {text[:500]!r}"
            )


def exception_texts(exc: BaseException) -> Iterable[str]:
    """The message, repr and every attribute of ``exc`` and of its cause and context chain."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield str(e)
        yield repr(e)
        for value in vars(e).values():
            yield repr(value)
        stack += [e.__cause__, e.__context__]


@dataclass
class FakeTI:
    """The few task-instance methods our operators and Airflow's sensor base call, with XComs in a dict."""

    dag_id: str = "reliability"
    task_id: str = "wait"
    # a new run each time: the operators' idempotency key derives from (dag, run, task, map index)
    run_id: str = field(default_factory=lambda: f"manual__{uuid.uuid4().hex}")
    map_index: int = -1
    try_number: int = 1
    max_tries: int = 0
    xcom: dict[str, Any] = field(default_factory=dict)
    first_reschedule_date: Any = None

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(key)

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.first_reschedule_date


def make_context(ti: FakeTI | None = None) -> dict[str, Any]:
    ti = ti or FakeTI()
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id, "params": {}}


_WS = re.compile(r"\s+")


def one_line(text: str) -> str:
    return _WS.sub(" ", text).strip()


def patch_reschedule_start(monkeypatch: Any, started: Any) -> None:
    """Airflow 2.11's sensor reads the first try's start from the task_reschedule table in reschedule
    mode; there is no scheduler (nor that table) in these in-process runs: answer it directly."""
    try:
        import airflow.sensors.base as sensors_base
    except ImportError:
        return
    if hasattr(sensors_base, "_orig_start_date"):
        monkeypatch.setattr(sensors_base, "_orig_start_date", lambda **_: started)
