"""MKA1BatchAdapter over real HTTP against the emulator: submit, state, results, reattach after a lost
answer to POST /batches, and what common-ai's own OpenAI adapter does on the same fault (measured)."""

from __future__ import annotations

import importlib.metadata
import time
import uuid
from datetime import UTC, datetime

import pytest

from airflow_provider_batches.exceptions import MKA1InvalidInputError
from tests.conftest import API_KEY

BATCHES = "/api/v1/llm/batches"


def _spec():
    from airflow.providers.common.ai.batch.output_schema import build_output_spec

    return build_output_spec(str)


def _adapter(base_url: str, api_key: str = API_KEY):
    from airflow_provider_batches.adapters.common_ai import MKA1BatchAdapter

    return MKA1BatchAdapter(api_key=api_key, base_url=base_url)


def _submit(adapter, key: str, fingerprint: str = "f" * 64, n: int = 4):
    return adapter.submit(
        [{"prompt": f"question {i}"} for i in range(n)],
        model="mka1-small",
        idempotency_key=key,
        input_fingerprint=fingerprint,
        output_spec=_spec(),
    )


def _batches_with(emulator, key: str) -> list:
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

    hook = MKA1Hook.from_credentials(emulator.base_url, API_KEY)
    return [b for b in hook.list_batches() if (b.metadata or {}).get("idempotency_key") == key]


def _wait(adapter, batch_id: str) -> None:
    deadline = time.monotonic() + 15
    while adapter.get_batch(batch_id).status == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.05)


def test_the_entry_point_serves_the_mka1_prefix() -> None:
    from airflow.providers.common.ai.batch import dispatch

    (entry,) = [
        e for e in importlib.metadata.entry_points(group=dispatch.ENTRY_POINT_GROUP) if e.name == "mka1"
    ]
    cls = entry.load()
    assert dispatch.get_adapter_class("mka1", "mka1:any-model") is cls
    assert dispatch.get_adapter_class("pydanticai", "mka1:any-model") is cls


def test_submit_state_and_results(emulator) -> None:
    adapter = _adapter(emulator.base_url)
    key = uuid.uuid4().hex[:16]
    result = _submit(adapter, key, n=5)
    assert result.provider_input_ref.startswith("file")
    _wait(adapter, result.batch_id)
    state = adapter.get_batch(result.batch_id)
    assert state.status == "completed"
    assert state.counts == {"succeeded": 5, "errored": 0, "expired": 0, "cancelled": 0}
    items = sorted(adapter.iter_results(result.batch_id), key=lambda item: item.index)
    assert [item.index for item in items] == [0, 1, 2, 3, 4]
    assert all(item.provider_status == "success" for item in items)
    assert [item.custom_id for item in items] == [f"{key}-{n}" for n in range(5)]
    assert all(item.usage["input_tokens"] > 0 and item.usage["output_tokens"] > 0 for item in items)
    output = adapter.extract_output(items[0], _spec())
    assert output.kind == "text" and output.text
    adapter.close()


def test_a_dropped_answer_to_post_batches_leaves_one_batch(emulator) -> None:
    adapter = _adapter(emulator.base_url)
    key = uuid.uuid4().hex[:16]
    emulator.add_fault(method="POST", path=BATCHES, kind="drop", count=1)
    result = _submit(adapter, key)
    assert [b.id for b in _batches_with(emulator, key)] == [result.batch_id]
    assert emulator.calls("POST", BATCHES) == 1


def test_common_ais_openai_adapter_creates_two_batches_on_the_same_fault(emulator) -> None:
    """What the common-ai page quotes: the OpenAI SDK re-sends a POST whose answer was lost."""
    pytest.importorskip("openai")
    from airflow.providers.common.ai.batch.openai import OpenAIBatchAdapter

    adapter = OpenAIBatchAdapter(api_key=API_KEY, base_url=f"{emulator.base_url}/api/v1/llm")
    key = uuid.uuid4().hex[:16]
    emulator.add_fault(method="POST", path=BATCHES, kind="drop", count=1)
    result = adapter.submit(
        [{"prompt": "question 0"}],
        model="mka1-small",
        idempotency_key=key,
        input_fingerprint="f" * 64,
        output_spec=_spec(),
    )
    batches = _batches_with(emulator, key)
    assert result.batch_id in {b.id for b in batches}
    assert len(batches) == 2
    assert emulator.calls("POST", BATCHES) == 2
    adapter.close()


def test_a_retry_finds_the_orphaned_batch_and_a_new_input_does_not(emulator) -> None:
    adapter = _adapter(emulator.base_url)
    key = uuid.uuid4().hex[:16]
    before = datetime.now(UTC).isoformat()
    result = _submit(adapter, key, fingerprint="a" * 64)
    assert adapter.find_orphaned_batch(key, "a" * 64, before) == result.batch_id
    assert adapter.find_orphaned_batch(key, "b" * 64, before) is None
    assert adapter.find_orphaned_batch(key, "a" * 64, "2099-01-01T00:00:00+00:00") is None
    # submitting again with the same key and input reattaches; a changed input is a new batch
    assert _submit(adapter, key, fingerprint="a" * 64).batch_id == result.batch_id
    assert _submit(adapter, key, fingerprint="b" * 64).batch_id != result.batch_id


def test_a_host_with_a_path_becomes_the_base_path(emulator) -> None:
    from airflow_provider_batches.adapters.common_ai import hook_for

    hook = hook_for(f"{emulator.base_url}/api/v1/llm/", API_KEY)
    assert (hook.settings.base_url, hook.settings.base_path) == (emulator.base_url, "/api/v1/llm")
    assert hook.test_connection()[0]


@pytest.mark.parametrize("key", [None, "", "bad key"])
def test_a_missing_or_bad_key_fails_before_any_request(emulator, key) -> None:
    emulator.reset_calls()
    with pytest.raises(MKA1InvalidInputError, match="common-ai connection") as raised:
        _adapter(emulator.base_url, api_key=key)
    assert key is None or key == "" or key not in str(raised.value)
    assert emulator.calls() == 0


def test_hostile_batch_ids_are_refused_before_any_request(emulator) -> None:
    adapter = _adapter(emulator.base_url)
    emulator.reset_calls()
    for bad in ("../files", "batch_1/cancel", "batch\r\nX: 1"):
        with pytest.raises(MKA1InvalidInputError):
            adapter.get_batch(bad)
        with pytest.raises(MKA1InvalidInputError):
            adapter.iter_results(bad)
        with pytest.raises(MKA1InvalidInputError):
            adapter.cancel_batch(bad)
    assert emulator.calls() == 0


def test_over_limit_and_mixed_model_batches_fail_before_any_request(emulator) -> None:
    from airflow.providers.common.ai.exceptions import LLMBatchLimitExceededError, LLMBatchModelMismatchError

    adapter = _adapter(emulator.base_url)
    emulator.reset_calls()
    many = [{"prompt": "q"}] * (adapter.max_requests + 1)
    with pytest.raises(LLMBatchLimitExceededError, match="expand"):
        adapter.validate_requests(many, model="m", output_spec=_spec(), idempotency_key="k" * 16)
    mixed = [{"prompt": "q"}, {"prompt": "q", "model": "mka1:other"}]
    with pytest.raises(LLMBatchModelMismatchError):
        adapter.validate_requests(mixed, model="m", output_spec=_spec(), idempotency_key="k" * 16)
    with pytest.raises(LLMBatchModelMismatchError):
        foreign = [{"prompt": "q", "model": "openai:gpt-5"}]
        adapter.validate_requests(foreign, model="m", output_spec=_spec(), idempotency_key="k" * 16)
    assert emulator.calls() == 0


def test_a_failed_request_is_an_errored_item(emulator) -> None:
    adapter = _adapter(emulator.base_url)
    key = uuid.uuid4().hex[:16]
    requests = [{"prompt": "fine"}, {"prompt": "fails", "params": {"emulator_fail": True}}]
    result = adapter.submit(
        requests, model="mka1-small", idempotency_key=key, input_fingerprint="c" * 64, output_spec=_spec()
    )
    _wait(adapter, result.batch_id)
    assert adapter.get_batch(result.batch_id).counts == {
        "succeeded": 1, "errored": 1, "expired": 0, "cancelled": 0
    }  # fmt: skip
    items = {item.index: item for item in adapter.iter_results(result.batch_id)}
    assert items[0].provider_status == "success"
    failed = items[1]
    assert failed.provider_status == "errored" and failed.raw is None
    assert failed.error["stage"] == "provider" and failed.error["message"]
    assert adapter.extract_output(failed, _spec()).kind == "absent"


def test_nothing_else_in_the_package_imports_the_adapter() -> None:
    from tests.test_layout import MODULES, _imports

    importers = {
        name
        for name, path in MODULES.items()
        if "airflow_provider_batches.adapters.common_ai" in _imports(name, path)
    }
    assert importers == set()
