"""
The production shape: `airflow standalone` (scheduler, dag processor, triggerer, API server, LocalExecutor on
SQLite) runs the pipeline DAG, and the wait really happens in the triggerer. Once per CI run (Airflow 3.3).
"""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.conftest import API_KEY
from tests.e2e.standalone import DAG_ID, Standalone

pytestmark = [pytest.mark.e2e, pytest.mark.standalone]


def test_pipeline_runs_with_the_wait_deferred_to_the_triggerer(standalone: Standalone, tmp_path) -> None:
    workdir = tmp_path / "pipeline"
    run_id = standalone.trigger(DAG_ID, {"workdir": str(workdir)})

    batch_states: list[str] = []

    def run_finished() -> str | None:
        ti = standalone.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/batch").json()
        if ti.get("state") and (not batch_states or batch_states[-1] != ti["state"]):
            batch_states.append(ti["state"])
        state = standalone.get(f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    assert standalone.wait_for("the DAG run to finish", run_finished, timeout=300) == "success"
    assert "deferred" in batch_states, batch_states
    # The trigger ran in the triggerer: only the triggerer writes a task's `.trigger.<job id>.log`.
    task_logs = standalone.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=batch"
    trigger_log = "".join(p.read_text() for p in task_logs.glob("attempt=1.log.trigger.*.log"))
    assert "Trigger fired event" in trigger_log
    # Progress as the batch runs (share, failures so far, rate, time left), then the end.
    assert re.search(
        r": in_progress: \d+% \(\d+ of 60 done, \d failed\), [\d.]+ requests/s, about", trigger_log
    )
    assert ": completed: 100% (60 of 60 done, 3 failed)." in trigger_log
    (fired,) = [line for line in trigger_log.splitlines() if "Trigger fired event" in line]
    assert ": None" not in fired, fired  # the event's batch leaves out its empty fields
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["answered"], summary["failed"]) == (57, ["q-7", "q-23", "q-41"])
    every_log = [standalone.log(), *(p.read_text(errors="replace") for p in standalone.home.rglob("*.log*"))]
    assert not [text for text in every_log if API_KEY in text]


def test_connection_form_in_the_api_server(standalone: Standalone) -> None:
    """What the UI shows a user adding an `mka1` connection: our fields, the key relabelled and hidden."""
    hook_meta = requests.get(
        f"{standalone.root}/ui/connections/hook_meta",
        headers={"Authorization": f"Bearer {standalone.token()}"},
        timeout=30,
    ).json()
    (mka1,) = [meta for meta in hook_meta if meta["connection_type"] == "mka1"]
    assert mka1["hook_name"] == "MKA1"
    assert {"on_behalf_of", "base_path", "timeout", "max_retries", "verify"} <= set(mka1["extra_fields"])
    assert mka1["standard_fields"]["password"]["title"] == "API key"
    assert mka1["standard_fields"]["host"]["title"] == "Base URL"
    assert mka1["standard_fields"]["login"]["hidden"] is True
