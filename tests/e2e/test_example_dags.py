"""`airflow dags test` of each example DAG in a real Airflow, against the emulator."""

from __future__ import annotations

import json

import pytest

from tests.conftest import API_KEY
from tests.e2e.conftest import AirflowHome

pytestmark = pytest.mark.e2e


def test_batch_pipeline_end_to_end(airflow_home: AirflowHome, tmp_path) -> None:
    workdir = tmp_path / "pipeline"
    run = airflow_home.run(
        "dags", "test", "example_mka1_batch_pipeline", "-c", json.dumps({"workdir": str(workdir)})
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    summary = json.loads((workdir / "summary.json").read_text())
    assert summary == {
        "asked": 60,
        "answered": 57,
        "failed": ["q-7", "q-23", "q-41"],
        "missing": [],
        "results_file": str(workdir / "results.jsonl"),
    }
    results = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
    assert len(results) == 57
    assert {r["custom_id"] for r in results} == {f"q-{n}" for n in range(1, 61)} - {"q-7", "q-23", "q-41"}
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in results)

    xcoms = airflow_home.xcoms("example_mka1_batch_pipeline")
    output_file_id = xcoms[("batch", "return_value")]
    assert output_file_id and output_file_id.startswith("file")
    assert xcoms[("batch", "batch_id")].startswith("batch")
    assert xcoms[("batch", "error_file_id")].startswith("file")
    assert xcoms[("batch", "request_counts")] == {"total": 60, "completed": 57, "failed": 3}
    assert xcoms[("download", "return_value")]["lines"] == 57
    # the secret never reaches an XCom
    assert API_KEY not in json.dumps(list(xcoms.values()))


def test_sensor_example_in_reschedule_mode(airflow_home: AirflowHome, tmp_path) -> None:
    workdir = tmp_path / "sensor"
    run = airflow_home.run("dags", "test", "example_mka1_sensor", "-c", json.dumps({"workdir": str(workdir)}))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    xcoms = airflow_home.xcoms("example_mka1_sensor")
    batch = xcoms[("wait_for_batch", "return_value")]
    assert batch["id"] == xcoms[("submit", "batch_id")]
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    assert xcoms[("count_answers", "return_value")] == 10


def _json_table(output: str) -> list[dict]:
    # Airflow 3.0 prints its own log lines on stdout ahead of the table.
    return json.loads(next(line for line in output.splitlines() if line.startswith("[{")))


def test_airflow_knows_the_provider_and_its_connection_type(airflow_home: AirflowHome) -> None:
    listed = airflow_home.run("providers", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    (provider,) = [p for p in _json_table(listed.stdout) if p["package_name"] == "airflow-provider-batches"]
    assert provider["version"]
    hooks = airflow_home.run("providers", "hooks", "-o", "json")
    assert hooks.returncode == 0, hooks.stderr[-3000:]
    (mka1,) = [h for h in _json_table(hooks.stdout) if h["connection_type"] == "mka1"]
    assert mka1["class"] == "airflow_provider_batches.hooks.mka1.MKA1Hook"
    assert mka1["hook_name"] == "MKA1"


@pytest.mark.parametrize(
    "name", ["example_mka1_batch_pipeline", "example_mka1_sensor", "example_mka1_batch_job"]
)
def test_example_dags_explain_themselves(name: str) -> None:
    """The DAG list shows a description, the DAG page its doc, the trigger form what each param is for."""
    import runpy

    from tests.e2e.conftest import REPO

    dag = runpy.run_path(str(REPO / "example_dags" / f"{name}.py"))["dag"]
    assert dag.description and dag.doc_md and "mka1_default" in dag.doc_md
    workdir = dag.params.get_param("workdir")
    assert workdir.description and workdir.schema["title"] == "Work directory"


def test_the_summary_lists_ids_in_natural_order() -> None:
    import runpy

    from tests.e2e.conftest import REPO

    key = runpy.run_path(str(REPO / "example_dags" / "example_mka1_batch_pipeline.py"))["natural_order"]
    assert sorted(["q-41", "q-7", "q-23", "q-100", "a-2"], key=key) == ["a-2", "q-7", "q-23", "q-41", "q-100"]


def test_batch_job_end_to_end(airflow_home: AirflowHome, tmp_path) -> None:
    workdir = tmp_path / "job"
    run = airflow_home.run(
        "dags", "test", "example_mka1_batch_job", "-c", json.dumps({"workdir": str(workdir)})
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    xcoms = airflow_home.xcoms("example_mka1_batch_job")
    answered = xcoms[("answer", "return_value")]
    assert answered["counts"] == {
        "requests": 250,
        "succeeded": 249,
        "failed": {"content_filter": 1},
        "invalid_output": 0,
        "never_ran": 0,
        "resubmitted": 3,
    }
    assert answered["rounds"] == 2 and [len(b) for b in answered["batches"]] == [3, 1]
    rows = [json.loads(line) for line in (workdir / "answers" / "results.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == [f"q-{n}" for n in range(250)]
    assert [r["custom_id"] for r in rows if r["attempts"] == 2] == ["q-12", "q-99", "q-180"]
    assert rows[42]["error"] == {"code": "content_filter", "message": "blocked"}
    assert (
        sum(r["response"]["usage"]["total_tokens"] for r in rows if r["response"])
        == answered["usage"]["total_tokens"]
    )
    classified = xcoms[("classify", "return_value")]
    assert classified["counts"]["succeeded"] == 4
    sentiment = [
        json.loads(line) for line in (workdir / "sentiment" / "results.jsonl").read_text().splitlines()
    ]
    assert all(set(r["output"]) == {"label", "confidence"} for r in sentiment)
    assert API_KEY not in json.dumps(list(xcoms.values()))
