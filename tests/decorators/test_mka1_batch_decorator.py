"""@task.mka1_batch: what the function may return, checked before anything is sent, and staged without a
half-written file; and in a real Airflow (`airflow dags test`): deferred, on a worker, mapped, from a
path, the function called once per task instance, the results asset's event and the DAG it schedules."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from airflow_provider_batches.exceptions import MKA1InvalidInputError
from tests.conftest import make_context
from tests.e2e.conftest import AirflowHome, airflow_env

DAGS = Path(__file__).parent / "dags"


def _operator(tmp_path: Path, function, **kwargs):
    from airflow.providers.common.compat.sdk import DAG, task

    with DAG("mka1_decorator_unit", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        made = task.mka1_batch(task_id="job", result_path=str(tmp_path / "out"), **kwargs)(function)()
    return made.operator


def test_the_decorator_is_registered_and_takes_the_job_operators_parameters(tmp_path) -> None:
    from airflow_provider_batches.operators.mka1_job import MKA1BatchJobOperator

    op = _operator(tmp_path, lambda: [], model="m", max_requests_per_batch=7, resubmit_rounds=0)
    assert isinstance(op, MKA1BatchJobOperator)
    assert (op.max_requests_per_batch, op.resubmit_rounds, op.model) == (7, 0, "m")
    assert "requests" not in op.template_fields and "result_path" in op.template_fields


@pytest.mark.parametrize(
    ("returned", "match"),
    [
        ({"custom_id": "a", "body": {}}, "returned a dict"),
        (42, "returned a int"),
        (b"{}", "returned a bytes"),
        (None, "returned a NoneType"),
        ([], "returned no requests"),
        (iter(["a prompt"]), "need model="),
        ([{"custom_id": "a", "body": {"model": "m"}}, 5], "Request 2"),
    ],
)
def test_bad_returns_are_refused_and_leave_no_file(tmp_path, emulator, returned, match) -> None:
    emulator.reset_calls()
    op = _operator(tmp_path, lambda: returned)
    with pytest.raises(MKA1InvalidInputError, match=match):
        op._stage(returned, make_context())
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []
    assert emulator.calls() == 0


def test_a_generator_is_streamed_to_the_requests_file(tmp_path) -> None:
    seen: list[int] = []

    def requests():
        for n in range(1000):
            seen.append(n)
            yield f"prompt {n}"

    op = _operator(tmp_path, requests, model="mka1-small", system_prompt="Be brief.")
    context = make_context()
    staged = op._stage(requests(), context)
    lines = [json.loads(line) for line in Path(staged).read_text().splitlines()]
    assert len(lines) == 1000 and seen == list(range(1000))
    assert lines[3]["custom_id"] == "prompt-3"
    assert lines[3]["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert Path(staged).parent == tmp_path / "out" and Path(staged).name.startswith("requests-af-")
    # another task instance (here: map index) stages to its own file
    other = make_context(run_id=context["run_id"], map_index=1)
    assert op._stage(iter(["x"]), other) != staged


def test_a_returned_path_is_used_as_it_is(tmp_path) -> None:
    op = _operator(tmp_path, lambda: "s3://bucket/requests.jsonl")
    assert op._stage("s3://bucket/requests.jsonl", make_context()) == "s3://bucket/requests.jsonl"
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def home(emulator_session, tmp_path_factory) -> Iterator[AirflowHome]:
    path = tmp_path_factory.mktemp("airflow-home-decorator")
    env = airflow_env(path, emulator_session.base_url)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"  # a paused DAG is not queued by an asset
    # the job operator's lineage, from the openlineage provider's file transport (when it is installed)
    env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
        {"type": "file", "log_file_path": str(path / "openlineage.jsonl"), "append": True}
    )
    env["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "mka1-tests"
    home = AirflowHome(path, env)
    migrated = home.run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    # What the DAG processor does: register the DAGs and their assets (Airflow 2's `dags test` does not,
    # and a dataset unknown to the database gets no event)
    reserialized = home.run("dags", "reserialize")
    assert reserialized.returncode == 0, reserialized.stderr[-3000:]
    yield home


def _table(home: AirflowHome, airflow3: str, airflow2: str) -> str:
    with sqlite3.connect(home.path / "airflow.db") as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return airflow3 if airflow3 in names else airflow2


@pytest.mark.e2e
def test_taskflow_dag_end_to_end(home: AirflowHome, tmp_path) -> None:
    run = home.run("dags", "test", "mka1_batch_taskflow", "-c", json.dumps({"workdir": str(tmp_path)}))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # the function ran once per task instance, deferred ones included
    calls = sorted((tmp_path / "calls.txt").read_text().split())
    assert calls == ["from_file", "generated", "partition-0", "partition-1", "prompts"]

    xcoms = home.xcoms("mka1_batch_taskflow")
    expected = {"generated": 30, "prompts": 5, "from_file": 4}
    for task_id, count in expected.items():
        manifest = xcoms[(task_id, "return_value")]
        assert manifest["counts"]["requests"] == manifest["counts"]["succeeded"] == count, task_id
        rows = [json.loads(line) for line in Path(manifest["results"]).read_text().splitlines()]
        assert len(rows) == count
    assert xcoms[("from_file", "requests_path")] == str(tmp_path / "given.jsonl")

    # mapped: one job per partition, each with its own batches (idempotency per map index)
    with sqlite3.connect(home.path / "airflow.db") as db:
        mapped = db.execute(
            "SELECT map_index, value FROM xcom WHERE dag_id = 'mka1_batch_taskflow' "
            "AND task_id = 'partition' AND key = 'return_value' ORDER BY map_index"
        ).fetchall()
    manifests = [json.loads(value) for _, value in mapped]
    assert [index for index, _ in mapped] == [0, 1]
    assert [m["counts"]["succeeded"] for m in manifests] == [3, 3]
    batches = [{batch for round_ids in m["batches"] for batch in round_ids} for m in manifests]
    assert batches[0] and batches[1] and not batches[0] & batches[1]

    # the results asset: one event carrying the manifest's counts and URIs; the consumer DAG is queued
    events, queue = (
        _table(home, "asset_event", "dataset_event"),
        _table(home, "asset_dag_run_queue", "dataset_dag_run_queue"),
    )
    with sqlite3.connect(home.path / "airflow.db") as db:
        (extra,) = [json.loads(row[0]) for row in db.execute(f"SELECT extra FROM {events}")]
        queued = [row[0] for row in db.execute(f"SELECT target_dag_id FROM {queue}")]
    generated = xcoms[("generated", "return_value")]
    assert extra == {k: generated[k] for k in ("counts", "results", "manifest")}
    assert queued == ["mka1_results_consumer"]

    if importlib.util.find_spec("airflow.providers.openlineage") is None:
        return
    lines = (home.path / "openlineage.jsonl").read_text().splitlines()
    (event,) = [
        e
        for e in map(json.loads, lines)
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "mka1_batch_taskflow.generated"
    ]
    staged = xcoms[("generated", "requests_path")]
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [("file", staged)]
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [("file", generated["results"])]
    facet = event["run"]["facets"]["mka1_batch"]
    assert facet["batch_ids"] == [b for round_ids in generated["batches"] for b in round_ids]
    assert facet["request_counts"] == {"total": 30, "completed": 30, "failed": 0}
    assert facet["usage"] == generated["usage"] and facet["usage"]
