"""MKA1BatchOperator and MKA1DownloadFileOperator, over HTTP against the emulator."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import jinja2
import pytest
from airflow.providers.common.compat.sdk import AirflowSkipException, ObjectStoragePath, TaskDeferred

from airflow_provider_batches.exceptions import (
    MKA1BatchCancelledError,
    MKA1BatchFailedError,
    MKA1Error,
    MKA1InvalidInputError,
)
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import BatchStatus
from airflow_provider_batches.operators.mka1 import MKA1BatchOperator, MKA1DownloadFileOperator
from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger
from tests.conftest import (
    ENDPOINT,
    connection_json,
    make_context,
    run_trigger,
    submit_batch,
    wait_for,
    write_requests,
)

CREATES = "/api/v1/llm/batches"
UPLOADS = "/api/v1/llm/files"
CANCELS = "/api/v1/llm/batches/*/cancel"
FAST = {"poll_interval": 0.05, "max_poll_interval": 0.3}


def operator(**kwargs) -> MKA1BatchOperator:
    for key, value in FAST.items():
        kwargs.setdefault(key, value)
    return MKA1BatchOperator(task_id="batch", **kwargs)


# -- MKA1BatchOperator ----------------------------------------------------------------------------


def test_template_fields_and_exactly_one_source() -> None:
    assert set(MKA1BatchOperator.template_fields) == {
        "batch_id",
        "input_file_id",
        "input_path",
        "endpoint",
        "metadata",
        "on_behalf_of",
    }
    with pytest.raises(ValueError, match="exactly one of"):
        MKA1BatchOperator(task_id="none")
    with pytest.raises(ValueError, match="got batch_id, input_file_id"):
        MKA1BatchOperator(task_id="two", batch_id="batch_a", input_file_id="file-a")
    with pytest.raises(ValueError, match="max_failed_ratio"):
        MKA1BatchOperator(task_id="ratio", batch_id="batch_a", max_failed_ratio=1.5)
    with pytest.raises(ValueError, match="poll_interval"):
        MKA1BatchOperator(task_id="poll", batch_id="batch_a", poll_interval=0)


@pytest.mark.parametrize("source", ["input_path", "input_file_id"])
def test_a_new_batch_looks_for_an_earlier_try_once(emulator, mka1_conn, tmp_path, source) -> None:
    user = f"user-{uuid.uuid4().hex[:12]}"  # an empty list of batches: one page per look
    path = write_requests(tmp_path / "requests.jsonl", 3)
    given = {"input_path": str(path)}
    if source == "input_file_id":
        given = {"input_file_id": MKA1Hook(on_behalf_of=user).upload_file(path).id}
    emulator.reset_calls()
    operator(on_behalf_of=user, wait_for_completion=False, **given).execute(make_context())
    assert emulator.calls(method="GET", path=CREATES) == 1  # find_batch: one list read, not two
    assert emulator.calls(method="POST", path=CREATES) == 1
    assert emulator.calls(method="POST", path=UPLOADS) == (1 if source == "input_path" else 0)


def test_resuming_without_an_event_is_a_clear_error() -> None:
    with pytest.raises(MKA1Error, match="without an event"):
        operator(batch_id="batch_a").execute_complete(make_context(), None)


def test_creates_from_a_local_file_waits_and_pushes_its_xcoms(emulator, mka1_conn, tmp_path) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 30, fail=[7])
    context = make_context()

    output_file_id = operator(input_path=str(path), metadata={"team": "eval"}, max_failed_ratio=0.05).execute(
        context
    )

    ti = context["ti"]
    batch = MKA1Hook().get_batch(ti.xcoms["batch_id"])
    assert batch.status == BatchStatus.COMPLETED
    assert output_file_id == batch.output_file_id
    assert ti.xcoms["error_file_id"] == batch.error_file_id
    assert ti.xcoms["request_counts"] == {"total": 30, "completed": 29, "failed": 1}
    assert ti.pushed[0] == "batch_id"  # before the wait
    assert batch.metadata["team"] == "eval" and batch.metadata["airflow_idempotency_key"]
    assert emulator.calls(method="POST", path=UPLOADS) == 1


def test_a_batch_without_failed_requests_pushes_no_error_file_id(mka1_conn, tmp_path) -> None:
    # Airflow 3.0.6's execution API refuses an XCom of null with a 422, which failed the task.
    context = make_context()
    operator(input_path=str(write_requests(tmp_path / "requests.jsonl", 3))).execute(context)

    xcoms = context["ti"].xcoms
    assert xcoms["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert "error_file_id" not in xcoms and None not in xcoms.values()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"metadata": {"rows": 3}}, "metadata"),
        ({"endpoint": "v1/embeddings"}, "endpoint"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_bad_batch_options_fail_before_the_upload(emulator, mka1_conn, tmp_path, options, named) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 3)
    with pytest.raises(MKA1InvalidInputError, match=named):
        operator(input_path=str(path), **options).execute(make_context())
    assert emulator.calls() == 0


def test_a_retry_reattaches_instead_of_creating_a_second_batch(emulator, mka1_conn, tmp_path) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 10)
    first_try, second_try = make_context(run_id="manual__retry"), make_context(run_id="manual__retry")

    first = operator(input_path=str(path)).execute(first_try)
    second = operator(input_path=str(path)).execute(second_try)

    assert first == second
    assert first_try["ti"].xcoms["batch_id"] == second_try["ti"].xcoms["batch_id"]
    assert emulator.calls(method="POST", path=CREATES) == 1
    assert emulator.calls(method="POST", path=UPLOADS) == 1  # found before uploading again

    # Another mapped task instance is another batch.
    operator(input_path=str(path), wait_for_completion=False).execute(
        make_context(run_id="manual__retry", map_index=1)
    )
    assert emulator.calls(method="POST", path=CREATES) == 2


def test_a_retry_with_input_file_id_reattaches(emulator, mka1_conn, tmp_path) -> None:
    file_id = MKA1Hook().upload_file(write_requests(tmp_path / "requests.jsonl", 5)).id

    first = operator(input_file_id=file_id, wait_for_completion=False).execute(make_context(run_id="r"))
    context = make_context(run_id="r")
    second = operator(input_file_id=file_id).execute(context)

    assert first is None  # not waited for: no output file yet
    assert second == MKA1Hook().get_batch(context["ti"].xcoms["batch_id"]).output_file_id
    assert emulator.calls(method="POST", path=CREATES) == 1


def test_uploads_from_object_storage(emulator, mka1_conn, tmp_path) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 5)

    output_file_id = operator(input_path=ObjectStoragePath(f"file://{path}")).execute(make_context())

    assert output_file_id and emulator.calls(method="POST", path=UPLOADS) == 1


def test_attaches_to_an_existing_batch(emulator, mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 5)
    emulator.reset_calls()
    context = make_context()

    output_file_id = operator(batch_id=batch.id).execute(context)

    assert output_file_id == MKA1Hook().get_batch(batch.id).output_file_id
    assert context["ti"].xcoms["batch_id"] == batch.id
    assert emulator.calls(method="POST") == 0


def test_deferrable_mode_pushes_batch_id_before_deferring(emulator, mka1_conn, tmp_path) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 20)
    task = operator(input_path=str(path), deferrable=True, timeout=600)
    context = make_context()

    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        task.execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, MKA1BatchTrigger)
    assert context["ti"].pushed == ["batch_id"]
    assert trigger.batch_id == context["ti"].xcoms["batch_id"]
    assert before + 600 <= trigger.deadline <= time.time() + 600

    (event,) = asyncio.run(run_trigger(trigger))
    output_file_id = getattr(task, info.value.method_name)(context, event.payload)

    assert output_file_id == event.payload["batch"]["output_file_id"]
    assert context["ti"].xcoms["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert emulator.calls(method="POST", path=CREATES) == 1


def test_deferrable_timeout_fails_the_task(mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 2000)
    task = operator(batch_id=batch.id, deferrable=True, timeout=0.3)
    with pytest.raises(TaskDeferred) as info:
        task.execute(make_context())

    (event,) = asyncio.run(run_trigger(info.value.trigger))
    with pytest.raises(MKA1Error, match="Timed out"):
        task.execute_complete(make_context(), event.payload)
    MKA1Hook().cancel_batch(batch.id)


def test_a_failed_batch_fails_the_task_with_its_errors(mka1_conn, tmp_path) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 3, invalid=[1])
    context = make_context()

    with pytest.raises(MKA1BatchFailedError, match=r"invalid_json_line.*line 2"):
        operator(input_path=str(path)).execute(context)

    xcoms = context["ti"].xcoms
    assert xcoms["request_counts"]["failed"] == 0
    assert xcoms.get("error_file_id") == MKA1Hook().get_batch(xcoms["batch_id"]).error_file_id


def test_sync_wait_survives_transient_errors(emulator, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_NO_RETRY", connection_json(emulator.base_url, max_retries=0))
    file_id = MKA1Hook("mka1_no_retry").upload_file(write_requests(tmp_path / "requests.jsonl", 20)).id
    emulator.add_fault(method="GET", path="/api/v1/llm/batches/*", kind="status", status=503, count=3)

    task = operator(input_file_id=file_id, mka1_conn_id="mka1_no_retry", error_budget=3)

    assert task.execute(make_context())
    assert emulator.calls(method="GET", path="/api/v1/llm/batches/*") >= 4
    emulator.add_fault(method="GET", path="/api/v1/llm/batches/*", kind="status", status=503, count=3)
    with pytest.raises(MKA1Error, match="503"):
        operator(input_file_id=file_id, mka1_conn_id="mka1_no_retry", error_budget=2).execute(make_context())


def test_sync_wait_times_out(mka1_conn, tmp_path) -> None:
    batch = submit_batch(tmp_path, 2000)
    with pytest.raises(MKA1Error, match=r"Timed out after 0\.3 s"):
        operator(batch_id=batch.id, timeout=0.3).execute(make_context())
    MKA1Hook().cancel_batch(batch.id)


@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_on_kill_cancels_the_batch_being_waited_on(emulator, mka1_conn, tmp_path, cancel_on_kill) -> None:
    batch = submit_batch(tmp_path, 2000)
    task = operator(batch_id=batch.id, cancel_on_kill=cancel_on_kill, timeout=3)

    def kill_once_waiting() -> None:
        # What the worker does when the task is killed: call on_kill while execute is still waiting.
        deadline = time.monotonic() + 5
        while task._waiting_on is None and time.monotonic() < deadline:
            time.sleep(0.01)
        task.on_kill()

    killer = threading.Thread(target=kill_once_waiting)
    killer.start()
    raised: list[BaseException] = []
    try:
        task.execute(make_context())
    except MKA1Error as exc:
        raised.append(exc)
    killer.join(10)

    if cancel_on_kill:
        assert emulator.calls(method="POST", path=CANCELS) == 1
        assert isinstance(raised[0], MKA1BatchCancelledError)
    else:
        assert emulator.calls(method="POST", path=CANCELS) == 0
        assert "Timed out" in str(raised[0])
        MKA1Hook().cancel_batch(batch.id)


# -- MKA1DownloadFileOperator ---------------------------------------------------------------------


@pytest.fixture
def finished(mka1_conn, tmp_path):
    return wait_for(submit_batch(tmp_path, 12, fail=[0, 5]).id)


def download(file_id, destination, **kwargs) -> MKA1DownloadFileOperator:
    return MKA1DownloadFileOperator(task_id="download", file_id=file_id, destination=destination, **kwargs)


def test_download_templates(finished) -> None:
    assert set(MKA1DownloadFileOperator.template_fields) == {"file_id", "destination", "on_behalf_of"}


def test_download_to_a_local_path_from_a_templated_xcom(finished, tmp_path) -> None:
    context = make_context("download")
    context["ti"].xcom_push(key="return_value", value=finished.output_file_id)
    task = download("{{ ti.xcom_pull(task_ids='batch') }}", str(tmp_path / "out" / "results.jsonl"))
    task.render_template_fields(context, jinja_env=jinja2.Environment())

    result = task.execute(context)

    target = tmp_path / "out" / "results.jsonl"
    assert result == {"path": str(target), "bytes": target.stat().st_size, "lines": 10}
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert {line["custom_id"] for line in lines} == {f"req-{n}" for n in range(12)} - {"req-0", "req-5"}
    assert [p.name for p in target.parent.iterdir()] == ["results.jsonl"]  # no temporary left behind


def test_download_to_file_object_storage(finished, tmp_path) -> None:
    target = ObjectStoragePath(f"file://{tmp_path}/results.jsonl")

    result = download(finished.error_file_id, target).execute(make_context("download"))

    assert result["lines"] == 2 and result["bytes"] == (tmp_path / "results.jsonl").stat().st_size


def test_download_to_memory_object_storage(finished) -> None:
    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())  # what a user does to use a scheme no provider registers
    target = ObjectStoragePath(f"memory://mka1-tests/{finished.id}/results.jsonl")

    result = download(finished.output_file_id, target).execute(make_context("download"))

    assert result["lines"] == 10
    assert target.read_bytes().count(b"\n") == 10 and result["bytes"] == len(target.read_bytes())


@pytest.mark.parametrize("file_id", [None, "", "None"])
def test_no_output_file_is_a_clear_error_or_a_skip(mka1_conn, emulator, tmp_path, file_id) -> None:
    with pytest.raises(MKA1InvalidInputError, match="No file to download"):
        download(file_id, str(tmp_path / "out.jsonl")).execute(make_context("download"))
    with pytest.raises(AirflowSkipException):
        download(file_id, str(tmp_path / "out.jsonl"), skip_if_no_file=True).execute(make_context("download"))
    assert emulator.calls() == 0
    assert not (tmp_path / "out.jsonl").exists()


def test_endpoint_is_passed_through(mka1_conn, tmp_path) -> None:
    path = write_requests(tmp_path / "requests.jsonl", 2)
    context = make_context()
    operator(input_path=str(path), endpoint=ENDPOINT, wait_for_completion=False).execute(context)
    assert MKA1Hook().get_batch(context["ti"].xcoms["batch_id"]).endpoint == ENDPOINT
