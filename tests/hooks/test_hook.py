"""Every MKA1Hook method against the emulator, over HTTP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from airflow_provider_batches.exceptions import (
    MKA1BadRequestError,
    MKA1InvalidInputError,
    MKA1InvalidResponseError,
    MKA1NotFoundError,
)
from airflow_provider_batches.get_provider_info import CONN_FIELDS
from airflow_provider_batches.hooks.mka1 import MKA1Hook, idempotency_key_for
from airflow_provider_batches.models import Batch, BatchStatus, FileObject
from airflow_provider_batches.validation import validate_on_behalf_of
from tests.conftest import connection_json
from tests.hooks.conftest import API, wait_terminal, write_jsonl
from tests.reliability.hostile import HOSTILE_ON_BEHALF_OF, VALID_ON_BEHALF_OF


def test_class_attributes_and_form() -> None:
    assert (MKA1Hook.conn_name_attr, MKA1Hook.default_conn_name) == ("mka1_conn_id", "mka1_default")
    assert (MKA1Hook.conn_type, MKA1Hook.hook_name) == ("mka1", "MKA1")
    behaviour = MKA1Hook.get_ui_field_behaviour()
    # Port shown: Airflow 3.3.0-3.3.2 refuse Test from the list for a connection stored without one.
    assert behaviour["hidden_fields"] == ["schema", "login", "extra"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key", "port": "Port"}


def test_connection_form_widgets() -> None:
    pytest.importorskip("wtforms")  # Airflow 2.11 to 3.1 build the form from these; 3.2+ does not need them
    pytest.importorskip("flask_appbuilder")
    widgets = MKA1Hook.get_connection_form_widgets()
    # backoff_base and scheme were read from the extras but missing from the form (issue 10).
    assert {name: w.field_class.__name__ for name, w in widgets.items()} == {
        "on_behalf_of": "StringField",
        "base_path": "StringField",
        "timeout": "StringField",
        "max_retries": "IntegerField",
        "backoff_base": "StringField",
        "verify": "StringField",
        "scheme": "StringField",
        "ca_bundle": "StringField",
        "max_requests_per_second": "StringField",
    }
    assert all(w.kwargs["description"] for w in widgets.values())


@pytest.mark.parametrize(
    "value", [*HOSTILE_ON_BEHALF_OF.values(), *VALID_ON_BEHALF_OF, " x", "x ", "a" * 256, "a" * 257]
)
def test_the_forms_on_behalf_of_rule_is_the_hooks(value: str) -> None:
    """The form's pattern and length (3.x: JSON schema; 2.x: WTForms validators) refuse what the hook does."""
    import re

    schema = CONN_FIELDS["on_behalf_of"]["schema"]
    form_accepts = bool(re.fullmatch(schema["pattern"], value)) and len(value) <= schema["maxLength"]
    try:
        validate_on_behalf_of(value)
        hook_accepts = True
    except MKA1InvalidInputError:
        hook_accepts = False
    assert form_accepts == hook_accepts


def test_the_2x_form_refuses_a_bad_on_behalf_of_on_save() -> None:
    wtforms = pytest.importorskip("wtforms")
    pytest.importorskip("flask_appbuilder")
    from werkzeug.datastructures import MultiDict

    field = MKA1Hook.get_connection_form_widgets()["on_behalf_of"]
    form_class = type("Form", (wtforms.Form,), {"on_behalf_of": field})
    assert form_class(MultiDict({"on_behalf_of": "user-42"})).validate()
    refused = form_class(MultiDict({"on_behalf_of": "user 42 "}))
    assert not refused.validate()
    assert "Printable ASCII" in refused.errors["on_behalf_of"][0]
    assert form_class(MultiDict({"on_behalf_of": ""})).validate()  # empty: no end user


def test_upload_get_list_delete_file(hook: MKA1Hook, input_file: Path, emulator) -> None:
    file = hook.upload_file(input_file, filename="my input.jsonl")
    assert (file.bytes, file.purpose, file.filename) == (input_file.stat().st_size, "batch", "my input.jsonl")
    assert hook.get_file(file.id) == file
    assert [f.id for f in hook.list_files()] == [file.id]
    assert [f.id for f in hook.list_files(purpose="batch", order="asc")] == [file.id]
    assert list(hook.list_files(purpose="evals")) == []
    deleted = hook.delete_file(file.id)
    assert (deleted.id, deleted.deleted) == (file.id, True)
    with pytest.raises(MKA1NotFoundError):
        hook.get_file(file.id)


def test_upload_from_object_storage_and_download_there(hook: MKA1Hook, input_file: Path, memory_fs) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    source = ObjectStoragePath("memory://bucket/in/requests.jsonl")
    source.write_bytes(input_file.read_bytes())
    file = hook.upload_file(source)
    assert (file.filename, file.bytes) == ("requests.jsonl", input_file.stat().st_size)
    target = ObjectStoragePath("memory://bucket/out/copy.jsonl")
    result = hook.download_file(file.id, target)
    assert target.read_bytes() == input_file.read_bytes()
    assert (result.path, result.bytes, result.lines) == (str(target), file.bytes, 5)
    assert [p.name for p in target.parent.iterdir()] == ["copy.jsonl"]
    local = ObjectStoragePath(f"file://{input_file}")
    assert hook.upload_file(local).bytes == file.bytes


def test_create_get_wait_results(hook: MKA1Hook, uploaded: FileObject, tmp_path: Path) -> None:
    batch = hook.create_batch(
        uploaded.id, "/v1/chat/completions", metadata={"team": "eval"}, max_concurrency=4
    )
    assert batch.status == BatchStatus.VALIDATING
    assert batch.metadata == {"team": "eval"} and batch.max_concurrency == 4
    assert hook.get_batch(batch.id).id == batch.id
    done = wait_terminal(hook, batch.id)
    assert done.status == BatchStatus.COMPLETED and done.is_success
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 4, 1)
    assert done.output_file_id and done.error_file_id

    results = list(hook.iter_results(done.output_file_id))
    assert sorted(r.custom_id for r in results) == ["req-0", "req-1", "req-2", "req-4"]
    assert all(r.ok and r.response is not None and r.response.status_code == 200 for r in results)
    errors = list(hook.iter_results(done.error_file_id))
    assert [(r.custom_id, r.ok, r.response) for r in errors] == [("req-3", False, None)]
    assert errors[0].error is not None and errors[0].error.code

    result = hook.download_file(done.output_file_id, tmp_path / "out" / "results.jsonl")
    path = Path(result.path)
    assert path == tmp_path / "out" / "results.jsonl"
    assert (result.bytes, result.lines) == (path.stat().st_size, 4)
    assert [json.loads(line)["custom_id"] for line in path.read_text().splitlines()] == [
        r.custom_id for r in results
    ]
    into_dir = hook.download_file(done.error_file_id, tmp_path / "out")
    assert Path(into_dir.path).parent == tmp_path / "out" and into_dir.lines == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["results.jsonl", Path(into_dir.path).name]
    )


def test_iter_results_skips_blank_lines_and_names_a_bad_line(hook: MKA1Hook, tmp_path: Path) -> None:
    good = {"custom_id": "a", "response": {"status_code": 200, "request_id": "r", "body": {}}, "error": None}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(good) + "\n\n   \n" + json.dumps({**good, "custom_id": "b"}) + "\n{oops\n")
    file = hook.upload_file(path, purpose="user_data")
    seen = []
    with pytest.raises(MKA1InvalidResponseError) as info:
        for line in hook.iter_results(file.id):
            seen.append(line.custom_id)
    assert seen == ["a", "b"]
    assert f"line 5 of file {file.id} is not a result line" in str(info.value)


def test_cancel_batch(hook: MKA1Hook, uploaded: FileObject) -> None:
    batch = hook.create_batch(uploaded.id, "/v1/chat/completions")
    cancelled = hook.cancel_batch(batch.id)
    assert cancelled.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    # Cancelling again (e.g. a retried cancel) returns the batch rather than failing.
    assert hook.cancel_batch(batch.id).id == batch.id
    done = wait_terminal(hook, batch.id)
    assert done.status == BatchStatus.CANCELLED
    finished = wait_terminal(hook, hook.create_batch(uploaded.id, "/v1/chat/completions").id)
    with pytest.raises(MKA1BadRequestError, match="Cannot cancel a batch with status 'completed'"):
        hook.cancel_batch(finished.id)


def test_pagination_follows_every_page(
    hook: MKA1Hook, uploaded: FileObject, tmp_path: Path, emulator
) -> None:
    created = [hook.create_batch(uploaded.id, "/v1/chat/completions").id for _ in range(5)]
    emulator.reset_calls()
    listed = [b.id for b in hook.list_batches(page_size=2)]
    assert listed == created[::-1]  # newest first, each once
    assert emulator.calls("GET", f"{API}/batches") == math.ceil(5 / 2)
    files = [uploaded.id] + [hook.upload_file(write_jsonl(tmp_path / f"f{i}.jsonl", 1)).id for i in range(4)]
    emulator.reset_calls()
    # The batches above may have written their output files by now, and those have purpose "batch" too.
    listed_files = [f.id for f in hook.list_files(purpose="batch", page_size=2)]
    assert [f for f in listed_files if f in files] == files[::-1]
    assert len(set(listed_files)) == len(listed_files)  # each once
    assert emulator.calls("GET", f"{API}/files") == math.ceil(len(listed_files) / 2)
    with pytest.raises(MKA1InvalidInputError):
        list(hook.list_batches(page_size=101))
    with pytest.raises(MKA1InvalidInputError):
        list(hook.list_files(page_size=0))


def test_test_connection(hook: MKA1Hook, emulator, monkeypatch) -> None:
    emulator.reset_calls()
    ok, message = hook.test_connection()
    assert ok and emulator.base_url in message
    assert emulator.calls() == 1 and emulator.calls("GET", f"{API}/batches") == 1
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_BAD", connection_json(emulator.base_url, api_key="wrong-key-0000"))
    ok, message = MKA1Hook("mka1_bad").test_connection()
    assert not ok and "401" in message and "wrong-key-0000" not in message
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_NOKEY", connection_json(emulator.base_url, api_key=""))
    # Airflow's Test runs on a copy under a random id: the message names no id.
    assert MKA1Hook("mka1_nokey").test_connection() == (
        False,
        "MKA1 connection: no API key: set its password.",
    )
    assert emulator.calls("POST") == 0


def test_uri_form_connection(emulator, monkeypatch) -> None:
    from tests.conftest import API_KEY

    monkeypatch.setenv(
        "AIRFLOW_CONN_MKA1_URI", f"mka1://:{API_KEY}@127.0.0.1:{emulator.port}?timeout=5&max_retries=1"
    )
    hook = MKA1Hook("mka1_uri")
    assert hook.test_connection()[0]
    assert (hook.settings.base_url, hook.settings.timeout, hook.settings.retry.max_retries) == (
        emulator.base_url,
        5.0,
        1,
    )


def test_on_behalf_of_isolates_resources(make_hook, uploaded: FileObject) -> None:
    other = make_hook(on_behalf_of="somebody-else")
    with pytest.raises(MKA1NotFoundError):
        other.get_file(uploaded.id)


def test_idempotency_key_for() -> None:
    class TI:
        dag_id, task_id, run_id, map_index = "dag", "submit", "manual__1", -1

    key = idempotency_key_for({"ti": TI(), "run_id": "manual__1"})
    assert key.startswith("af-") and len(key) == 35
    assert key == idempotency_key_for({"ti": TI()})
    mapped = TI()
    mapped.map_index = 2
    assert idempotency_key_for({"ti": mapped}) != key
    with pytest.raises(MKA1InvalidInputError):
        idempotency_key_for({})


def test_create_batch_checks_its_arguments(hook: MKA1Hook, emulator) -> None:
    emulator.reset_calls()
    for kwargs in (
        {"input_file_id": "../x", "endpoint": "/v1/embeddings"},
        {"input_file_id": "file-1", "endpoint": "v1/embeddings"},
        {"input_file_id": "file-1", "endpoint": "/v1/embeddings", "metadata": {"a": 1}},
        {"input_file_id": "file-1", "endpoint": "/v1/embeddings", "max_concurrency": 0},
        {"input_file_id": "file-1", "endpoint": "/v1/embeddings", "completion_window": ""},
        {"input_file_id": "file-1", "endpoint": "/v1/embeddings", "idempotency_key": "a\nb"},
    ):
        with pytest.raises(MKA1InvalidInputError):
            hook.create_batch(**kwargs)  # type: ignore[arg-type]
    assert emulator.calls() == 0


def test_batch_of_another_end_user_reads_as_not_found(
    make_hook, hook: MKA1Hook, uploaded: FileObject
) -> None:
    batch: Batch = hook.create_batch(uploaded.id, "/v1/embeddings")
    with pytest.raises(MKA1NotFoundError) as info:
        make_hook(on_behalf_of="another-user").get_batch(batch.id)
    assert info.value.request_id and "404 Not Found" in str(info.value)


def test_url_strings_are_object_storage(hook: MKA1Hook, uploaded: FileObject, memory_fs) -> None:
    result = hook.download_file(uploaded.id, "memory://bucket/by-string.jsonl")
    assert result.bytes == uploaded.bytes and memory_fs.exists("/bucket/by-string.jsonl")
    again = hook.upload_file("memory://bucket/by-string.jsonl", filename='odd "name".jsonl')
    assert again.bytes == uploaded.bytes


def test_the_docs_json_example_names_every_form_field() -> None:
    """Airflow 3's edit form shows only the extras a connection has: the example must show them all."""
    readme = (Path(__file__).resolve().parents[2] / "docs" / "pages" / "installation.md").read_text()
    start = readme.index("export AIRFLOW_CONN_MKA1_DEFAULT='{")
    example = json.loads(readme[readme.index("{", start) : readme.index("}}'", start) + 2])
    assert set(example["extra"]) == set(CONN_FIELDS)
    assert example["port"] == 443  # what Airflow 3.3.0-3.3.2's Test needs


def test_a_hook_from_explicit_settings_talks_to_the_api(emulator) -> None:
    from tests.conftest import API_KEY as KEY

    hook = MKA1Hook.from_credentials(emulator.base_url, KEY, timeout=7, max_retries=1, on_behalf_of="user-9")
    settings = hook.settings
    assert (settings.timeout, settings.retry.max_retries, settings.on_behalf_of) == (7, 1, "user-9")
    assert settings.conn_id == "explicit settings"
    assert KEY not in repr(settings) and KEY not in repr(hook)
    assert hook.test_connection()[0]
    assert MKA1Hook.from_settings(settings).settings is settings


def test_explicit_settings_are_checked_like_a_connection(emulator) -> None:
    emulator.reset_calls()
    with pytest.raises(MKA1InvalidInputError, match=r"explicit settings.*timeout"):
        MKA1Hook.from_credentials(emulator.base_url, "k-123456", timeout=-1)
    with pytest.raises(MKA1InvalidInputError, match="no API key"):
        MKA1Hook.from_credentials(emulator.base_url, "")
    with pytest.raises(MKA1InvalidInputError, match=r"mine.*base URL"):
        MKA1Hook.from_credentials(f"{emulator.base_url}/x", "k-123456", label="mine")
    assert emulator.calls() == 0
