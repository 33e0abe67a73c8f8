"""common-ai's LLMBatchOperator with model_id="mka1:..." in a real Airflow (`airflow dags test`) against the
emulator: on a worker (with the answer to POST /batches dropped once) and deferred, results complete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.e2e.conftest import AirflowHome, airflow_env, without_airflow_30_mask_requests

pytestmark = pytest.mark.e2e

DAGS = Path(__file__).parent / "dags"
BATCHES = "/api/v1/llm/batches"


@pytest.fixture(scope="module")
def home(emulator_session, tmp_path_factory) -> Iterator[AirflowHome]:
    path = tmp_path_factory.mktemp("airflow-home-common-ai")
    env = airflow_env(path, emulator_session.base_url)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
    home = AirflowHome(path, env)
    migrated = home.run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield home


def _run(home: AirflowHome, dag_id: str, result_dir: Path) -> dict:
    run = home.run("dags", "test", dag_id, "-c", json.dumps({"result_path": result_dir.as_uri()}))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert API_KEY not in without_airflow_30_mask_requests(run.stdout + run.stderr)
    manifest = home.xcoms(dag_id)[("answer", "return_value")]
    assert manifest["adapter"] == "mka1"
    assert manifest["counts"] == {
        "succeeded": 8, "errored": 0, "invalid_output": 0, "expired": 0, "cancelled": 0, "missing": 0
    }  # fmt: skip
    rows = [
        json.loads(line)
        for line in Path(manifest["result_uri"].removeprefix("file://")).read_text().splitlines()
    ]
    assert sorted(row["index"] for row in rows) == list(range(8))
    assert all(row["status"] == "success" and row["output"] for row in rows)
    return manifest


def test_on_a_worker_a_dropped_post_batches_leaves_one_batch(home, emulator, tmp_path) -> None:
    emulator.add_fault(method="POST", path=BATCHES, kind="drop", count=1)
    manifest = _run(home, "mka1_llm_batch_sync", tmp_path / "results")
    assert emulator.calls("POST", BATCHES) == 1  # the lost answer was found by its key, not re-sent
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

    hook = MKA1Hook.from_credentials(emulator.base_url, API_KEY)
    prefix = manifest["custom_id_prefix"]
    mine = [b.id for b in hook.list_batches() if (b.metadata or {}).get("idempotency_key") == prefix]
    assert mine == [manifest["batch_id"]]


def test_deferred(home, emulator, tmp_path) -> None:
    manifest = _run(home, "mka1_llm_batch_deferred", tmp_path / "results")
    assert emulator.calls("POST", BATCHES) == 1
    assert manifest["batch_id"].startswith("batch")
