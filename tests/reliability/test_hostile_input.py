"""Hostile ids, end-user ids and connections are refused with a clear error before any request is sent.

Every test runs against the shared emulator and ends by reading its call counter: zero API calls.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_batches.exceptions import MKA1Error, MKA1InvalidInputError
from tests.conftest import API_KEY, connection_json
from tests.reliability.hostile import HOSTILE_IDS, HOSTILE_ON_BEHALF_OF, VALID_IDS, VALID_ON_BEHALF_OF
from tests.reliability.support import (
    FakeTI,
    assert_no_secret,
    exception_texts,
    make_context,
    patch_reschedule_start,
)

IDS = list(HOSTILE_IDS.items())
OBOS = list(HOSTILE_ON_BEHALF_OF.items())


def _obo_params() -> list:
    return [
        pytest.param(
            label,
            value,
            id=label,
        )
        for label, value in OBOS
    ]


def _hook(on_behalf_of: str | None = None):
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

    return MKA1Hook(mka1_conn_id="mka1_default", on_behalf_of=on_behalf_of)


def _refused(call, field: str, emulator) -> MKA1InvalidInputError:
    """Run ``call``; it must raise MKA1InvalidInputError naming ``field``, and the emulator saw nothing."""
    emulator.reset_calls()
    with pytest.raises(MKA1InvalidInputError) as info:
        call()
    message = str(info.value)
    # "batch id" or "batch_id": either names the field
    assert field.replace("_", " ") in message.replace("_", " "), f"does not name {field}: {message[:300]!r}"
    for text in exception_texts(info.value):
        assert_no_secret(API_KEY, text, where="an input error")
    assert emulator.calls() == 0, f"{emulator.calls()} request(s) reached the emulator"
    return info.value


# ---- the hook ---------------------------------------------------------------------------------------

HOOK_ID_CALLS: dict[str, tuple[str, Any]] = {
    "get_batch": ("batch_id", lambda h, v, tmp: h.get_batch(v)),
    "cancel_batch": ("batch_id", lambda h, v, tmp: h.cancel_batch(v)),
    "aget_batch": ("batch_id", lambda h, v, tmp: asyncio.run(h.aget_batch(v))),
    "acancel_batch": ("batch_id", lambda h, v, tmp: asyncio.run(h.acancel_batch(v))),
    "get_file": ("file_id", lambda h, v, tmp: h.get_file(v)),
    "delete_file": ("file_id", lambda h, v, tmp: h.delete_file(v)),
    "download_file": ("file_id", lambda h, v, tmp: h.download_file(v, tmp / "out.jsonl")),
    "iter_results": ("file_id", lambda h, v, tmp: list(h.iter_results(v))),
    "create_batch": ("input_file_id", lambda h, v, tmp: h.create_batch(v, "/v1/chat/completions")),
}


@pytest.mark.parametrize("method", sorted(HOOK_ID_CALLS))
@pytest.mark.parametrize(("label", "value"), IDS, ids=[label for label, _ in IDS])
def test_hook_refuses_hostile_ids(mka1_conn, emulator, tmp_path, method, label, value) -> None:
    field, call = HOOK_ID_CALLS[method]
    hook = _hook()
    _refused(lambda: call(hook, value, tmp_path), field, emulator)
    if method == "download_file":
        assert list(tmp_path.iterdir()) == [], "a refused download left a file behind"


@pytest.mark.parametrize(("label", "value"), _obo_params())
def test_hook_refuses_hostile_on_behalf_of(mka1_conn, emulator, label, value) -> None:
    # Refused when the hook is made or at the latest when a call would send it.
    def call() -> None:
        _hook(on_behalf_of=value).get_batch("batch_abc123")

    _refused(call, "on_behalf_of", emulator)


@pytest.mark.parametrize(("label", "value"), [(k, v) for k, v in OBOS if v], ids=[k for k, v in OBOS if v])
def test_connection_extra_on_behalf_of_is_checked_too(emulator, monkeypatch, label, value) -> None:
    # "" is left out: Airflow's connection form stores an unfilled field as "", which means "not set".
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", connection_json(emulator.base_url, on_behalf_of=value))
    _refused(lambda: _hook().get_batch("batch_abc123"), "on_behalf_of", emulator)


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_ids_do_reach_the_api(mka1_conn, emulator, value) -> None:
    """The other side of the coin: ids in the documented shapes are sent (and are simply not found)."""
    from airflow_provider_batches.exceptions import MKA1NotFoundError

    emulator.reset_calls()
    with pytest.raises(MKA1NotFoundError):
        _hook().get_batch(value)
    assert emulator.calls(method="GET", path=f"/api/v1/llm/batches/{value}") == 1


@pytest.mark.parametrize("value", VALID_ON_BEHALF_OF)
def test_valid_on_behalf_of_is_sent(mka1_conn, emulator, value) -> None:
    from airflow_provider_batches.exceptions import MKA1NotFoundError

    emulator.reset_calls()
    with pytest.raises(MKA1NotFoundError):
        _hook(on_behalf_of=value).get_batch("batch_abc123")
    assert emulator.calls() == 1


# ---- the operators and the sensor, through their templated fields -----------------------------------


def _render_and_execute(task, value: str, tmp_path) -> Any:
    """Render the task's templates with ``params.hostile = value``, as a worker would, then execute it."""
    import jinja2

    ti = FakeTI(task_id=task.task_id)
    context = make_context(ti)
    context["params"] = {"hostile": value}
    task.render_template_fields(context, jinja_env=jinja2.Environment())
    return task.execute(context)


HOSTILE_TEMPLATE = "{{ params.hostile }}"


def _sensor(**kwargs: Any):
    from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

    return MKA1BatchSensor(task_id="wait", poke_interval=0.01, timeout=5, **kwargs)


def _operator(**kwargs: Any):
    from airflow_provider_batches.operators.mka1 import MKA1BatchOperator

    return MKA1BatchOperator(task_id="batch", poll_interval=0.01, **kwargs)


def _download(tmp_path, **kwargs: Any):
    from airflow_provider_batches.operators.mka1 import MKA1DownloadFileOperator

    kwargs.setdefault("destination", str(tmp_path / "out.jsonl"))
    return MKA1DownloadFileOperator(task_id="download", **kwargs)


TASKS_WITH_ID: dict[str, tuple[str, Any]] = {
    "sensor-poke": ("batch_id", lambda tmp: _sensor(batch_id=HOSTILE_TEMPLATE, mode="poke")),
    "sensor-reschedule": ("batch_id", lambda tmp: _sensor(batch_id=HOSTILE_TEMPLATE, mode="reschedule")),
    "sensor-deferrable": ("batch_id", lambda tmp: _sensor(batch_id=HOSTILE_TEMPLATE, deferrable=True)),
    "operator-attach": ("batch_id", lambda tmp: _operator(batch_id=HOSTILE_TEMPLATE)),
    "operator-deferrable": ("batch_id", lambda tmp: _operator(batch_id=HOSTILE_TEMPLATE, deferrable=True)),
    "operator-create": ("input_file_id", lambda tmp: _operator(input_file_id=HOSTILE_TEMPLATE)),
    "download": ("file_id", lambda tmp: _download(tmp, file_id=HOSTILE_TEMPLATE)),
}


# (The download operator used to strip file_id, sending " id" or "id\r" as "id"; found here, fixed.)
@pytest.mark.parametrize("task_name", sorted(TASKS_WITH_ID))
@pytest.mark.parametrize(("label", "value"), IDS, ids=[label for label, _ in IDS])
def test_tasks_refuse_hostile_templated_ids(
    mka1_conn, emulator, tmp_path, monkeypatch, task_name, label, value
) -> None:
    patch_reschedule_start(monkeypatch, datetime.now(UTC))
    field, make = TASKS_WITH_ID[task_name]
    task = make(tmp_path)
    _refused(lambda: _render_and_execute(task, value, tmp_path), field, emulator)
    assert not (tmp_path / "out.jsonl").exists()


TASKS_WITH_OBO: dict[str, Any] = {
    "sensor-poke": lambda tmp: _sensor(batch_id="batch_abc123", on_behalf_of=HOSTILE_TEMPLATE),
    "sensor-deferrable": lambda tmp: _sensor(
        batch_id="batch_abc123", on_behalf_of=HOSTILE_TEMPLATE, deferrable=True
    ),
    "operator-attach": lambda tmp: _operator(batch_id="batch_abc123", on_behalf_of=HOSTILE_TEMPLATE),
    "operator-create": lambda tmp: _operator(input_file_id="file-abc123", on_behalf_of=HOSTILE_TEMPLATE),
    "download": lambda tmp: _download(tmp, file_id="file-abc123", on_behalf_of=HOSTILE_TEMPLATE),
}


@pytest.mark.parametrize("task_name", sorted(TASKS_WITH_OBO))
@pytest.mark.parametrize(("label", "value"), _obo_params())
def test_tasks_refuse_hostile_templated_on_behalf_of(
    mka1_conn, emulator, tmp_path, task_name, label, value
) -> None:
    task = TASKS_WITH_OBO[task_name](tmp_path)
    _refused(lambda: _render_and_execute(task, value, tmp_path), "on_behalf_of", emulator)


# ---- malformed connections ----------------------------------------------------------------------------

MALFORMED_CONNECTIONS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    # label: (connection fields that replace the good ones, words of which the message must name one)
    "no-key": ({"password": None}, ("password", "API key")),
    "empty-key": ({"password": ""}, ("password", "API key")),
    "blank-key": ({"password": "   "}, ("password", "API key")),
    "ftp-scheme": ({"host": "ftp://127.0.0.1:21"}, ("host",)),
    "file-scheme": ({"host": "file:///etc/passwd"}, ("host",)),
    "javascript-scheme": ({"host": "javascript:alert(1)"}, ("host",)),
    "no-hostname": ({"host": "http://"}, ("host",)),
    "crlf-in-host": ({"host": "http://127.0.0.1\r\nX-Injected: 1"}, ("host",)),
    "timeout-not-a-number": ({"extra": {"timeout": "soon"}}, ("timeout",)),
    "timeout-negative": ({"extra": {"timeout": -5}}, ("timeout",)),
    "timeout-zero": ({"extra": {"timeout": 0}}, ("timeout",)),
    "timeout-nan": ({"extra": {"timeout": "nan"}}, ("timeout",)),
    "timeout-list": ({"extra": {"timeout": [1, 2]}}, ("timeout",)),
    "max-retries-negative": ({"extra": {"max_retries": -1}}, ("max_retries",)),
    "max-retries-not-a-number": ({"extra": {"max_retries": "many"}}, ("max_retries",)),
    "max-retries-fraction": ({"extra": {"max_retries": 2.5}}, ("max_retries",)),
    "base-path-traversal": ({"extra": {"base_path": "/api/v1/../../admin"}}, ("base_path",)),
    "base-path-crlf": ({"extra": {"base_path": "/api/v1/llm\r\nX: 1"}}, ("base_path",)),
}


def _malformed_env(emulator, monkeypatch, fields: dict[str, Any]) -> None:
    conn = json.loads(connection_json(emulator.base_url))
    extra = {**conn["extra"], **fields.pop("extra", {})}
    conn.update(fields)
    conn["extra"] = extra
    if conn.get("password") is None:
        conn.pop("password", None)
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", json.dumps(conn))


@pytest.mark.parametrize("label", sorted(MALFORMED_CONNECTIONS))
def test_malformed_connection_names_the_field(emulator, monkeypatch, label) -> None:
    fields, words = MALFORMED_CONNECTIONS[label]
    _malformed_env(emulator, monkeypatch, dict(fields))
    emulator.reset_calls()
    with pytest.raises(MKA1Error) as info:
        _hook().get_batch("batch_abc123")
    message = str(info.value)
    assert isinstance(info.value, MKA1InvalidInputError), f"{type(info.value).__name__}: {message[:300]}"
    assert any(word.lower() in message.lower() for word in words), f"names none of {words}: {message[:300]!r}"
    for text in exception_texts(info.value):
        assert_no_secret(API_KEY, text, where="a connection error")
    assert emulator.calls() == 0


@pytest.mark.parametrize("label", sorted(MALFORMED_CONNECTIONS))
def test_test_connection_reports_the_field(emulator, monkeypatch, label) -> None:
    """The UI's "Test" button says the same, as a (False, message) answer rather than a crash."""
    fields, words = MALFORMED_CONNECTIONS[label]
    _malformed_env(emulator, monkeypatch, dict(fields))
    emulator.reset_calls()
    ok, message = _hook().test_connection()
    assert ok is False
    assert any(word.lower() in message.lower() for word in words), f"names none of {words}: {message[:300]!r}"
    assert_no_secret(API_KEY, message, where="test_connection's message")
    assert emulator.calls() == 0
