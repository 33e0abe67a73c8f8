"""OpenLineage of the MKA1 operators, from the events the openlineage provider's file transport writes
during a real `airflow dags test` of the example pipeline (submit, deferred wait, download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.e2e.conftest import AirflowHome, airflow_env

pytest.importorskip("airflow.providers.openlineage", reason="needs apache-airflow-providers-openlineage")
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def emulator_session():
    """An emulator of this module's own: its batches must not lengthen the shared emulator's listings."""
    from airflow_provider_batches.emulator import run_emulator
    from tests.conftest import FAST_TIMINGS

    with run_emulator(api_keys=(API_KEY,), **FAST_TIMINGS) as emu:
        yield emu


def _complete_events(path: Path) -> dict[str, dict]:
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {e["job"]["name"].rpartition(".")[2]: e for e in events if e["eventType"] == "COMPLETE"}


def _names(datasets: list[dict]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def test_the_pipeline_reports_its_datasets_and_batch(emulator_session, tmp_path) -> None:
    events_file = tmp_path / "events.jsonl"
    env = airflow_env(tmp_path / "home", emulator_session.base_url)
    env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
        {"type": "file", "log_file_path": str(events_file), "append": True}
    )
    env["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "mka1-tests"
    home = AirflowHome(tmp_path / "home", env)
    (tmp_path / "home").mkdir()
    assert home.run("db", "migrate").returncode == 0
    workdir = tmp_path / "work"
    run = home.run("dags", "test", "example_mka1_batch_pipeline", "-c", json.dumps({"workdir": str(workdir)}))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    xcoms = home.xcoms("example_mka1_batch_pipeline")
    batch_id, output_file_id = xcoms[("batch", "batch_id")], xcoms[("batch", "return_value")]
    error_file_id = xcoms[("batch", "error_file_id")]
    api = emulator_session.base_url
    events = _complete_events(events_file)

    batch = events["batch"]
    inputs = _names(batch["inputs"])
    assert inputs[0] == ("file", str(workdir / "requests.jsonl"))
    assert inputs[1][0] == api and inputs[1][1].startswith("files/file")
    assert _names(batch["outputs"]) == [(api, f"files/{output_file_id}"), (api, f"files/{error_file_id}")]
    facet = batch["run"]["facets"]["mka1_batch"]
    assert facet["batch_ids"] == [batch_id]
    assert facet["endpoint"] == "/v1/chat/completions"
    assert facet["request_counts"] == {"total": 60, "completed": 57, "failed": 3}

    download = events["download"]
    assert _names(download["inputs"]) == [(api, f"files/{output_file_id}")]
    assert _names(download["outputs"]) == [("file", str(workdir / "results.jsonl"))]
    assert API_KEY not in events_file.read_text()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("s3://bucket/requests/day.jsonl", ("s3://bucket", "requests/day.jsonl")),
        ("gs://b/x.jsonl", ("gs://b", "x.jsonl")),
        ("file:///data/x.jsonl", ("file", "/data/x.jsonl")),
        ("/data/x.jsonl", ("file", "/data/x.jsonl")),
    ],
)
def test_paths_are_named_as_openlineage_names_files(path, expected) -> None:
    from airflow_provider_batches.lineage import path_dataset

    dataset = path_dataset(path)
    assert (dataset.namespace, dataset.name) == expected
