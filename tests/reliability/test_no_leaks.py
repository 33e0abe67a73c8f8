"""Nothing leaked: a real Airflow (``airflow dags test`` and ``airflow tasks test`` in subprocesses, on
SQLite) runs tasks that use the API key on every path, then everything the runs left is scanned for it:
the task logs, the whole Airflow home (the metadata database with its xcom, trigger, task_instance and
rendered-fields tables included) and the commands' output. The keys are distinctive, and a scan finds any
10-character piece of them, so a truncated copy counts as a leak too.

In-process, the other tests of the suite scan exception messages and reprs, stored trigger kwargs and every
log line (see conftest.py, test_fault_matrix.py and test_restarts.py).
"""

from __future__ import annotations

import importlib.metadata
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_batches.emulator import run_emulator
from tests.conftest import FAST_TIMINGS, connection_json
from tests.e2e.conftest import REPO, AirflowHome, airflow_env, without_airflow_30_mask_requests
from tests.reliability.support import LONG, find_secret

pytestmark = pytest.mark.e2e

LEAK_KEY = "mka1-LeakProbe-Qz7Xv3Lp9Wn2Rt8Ky4Hd"
WRONG_KEY = "mka1-WrongKey-Jm5Bc8Tf1Gs6Np3Vx0Ea"
SECRETS = (LEAK_KEY, WRONG_KEY)
AIRFLOW_3 = int(importlib.metadata.version("apache-airflow").split(".")[0]) >= 3
PROBE_DAGS = Path(__file__).resolve().parent / "dags"
DAG_ID = "mka1_reliability_leak_probe"


def scan_tree(root: Path) -> list[str]:
    """Every (file, fragment) where a piece of a secret appears under ``root``, read as bytes."""
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_bytes().decode("latin-1")
        for secret in SECRETS:
            fragment = find_secret(secret, text)
            if fragment:
                at = text.find(fragment)
                hits.append(f"{path.relative_to(root)}: {text[max(0, at - 120) : at + 60]!r}")
    return hits


def test_the_scan_finds_a_planted_key(tmp_path) -> None:
    """Control: the scanner does see a key, whole or cut, in a text or a binary file."""
    (tmp_path / "a.log").write_text(f"token={LEAK_KEY[:14]}...")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.db").write_bytes(b"\x00\x01" + WRONG_KEY.encode() + b"\xff")
    assert len(scan_tree(tmp_path)) == 2


@pytest.fixture(scope="module")
def leak_run(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The probe DAG by `airflow dags test`, one of its tasks by `airflow tasks test` (and, in the long run,
    the example pipeline too), all against an emulator that knows only LEAK_KEY."""
    root = tmp_path_factory.mktemp("leaks")
    with run_emulator(api_keys=(LEAK_KEY,), **FAST_TIMINGS) as emu:
        home = AirflowHome(root / "airflow", airflow_env(root / "airflow", emu.base_url))
        home.env.update(
            AIRFLOW__CORE__DAGS_FOLDER=str(PROBE_DAGS),
            AIRFLOW_CONN_MKA1_DEFAULT=connection_json(emu.base_url, LEAK_KEY, max_retries=1),
            AIRFLOW_CONN_MKA1_WRONG_KEY=connection_json(emu.base_url, WRONG_KEY, max_retries=1),
        )
        runs = {"migrate": home.run("db", "migrate")}
        assert runs["migrate"].returncode == 0, runs["migrate"].stderr[-3000:]
        workdir = root / "work"
        conf = {"workdir": str(workdir), "hostile": "../files\r\nX-Injected: 1", "batch_id": ""}
        runs["dags test"] = home.run("dags", "test", DAG_ID, "-c", json.dumps(conf))

        # a batch for `tasks test` of the deferred sensor
        headers = {"Authorization": f"Bearer {LEAK_KEY}"}
        upload = requests.post(
            f"{emu.api_url}/files",
            headers=headers,
            files={"file": ("t.jsonl", (workdir / "requests.jsonl").read_bytes())},
            data={"purpose": "batch"},
            timeout=30,
        ).json()
        created = requests.post(
            f"{emu.api_url}/batches",
            headers=headers,
            json={
                "input_file_id": upload["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            timeout=30,
        ).json()
        params = json.dumps({"batch_id": created["id"], "workdir": str(workdir)})
        runs["tasks test"] = home.run("tasks", "test", DAG_ID, "deferred", "-t", params)
        if LONG:
            pipeline = AirflowHome(
                home.path, dict(home.env, AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "example_dags"))
            )
            runs["pipeline"] = pipeline.run(
                "dags",
                "test",
                "example_mka1_batch_pipeline",
                "-c",
                json.dumps({"workdir": str(root / "pipeline")}),
            )
        yield {"home": home, "runs": runs, "workdir": workdir, "batch_id": created["id"]}


def _rows(home: AirflowHome, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home.path / "airflow.db") as db:
        return db.execute(sql).fetchall()


def test_the_probe_ran_every_path(leak_run) -> None:
    """Non-vacuity: the runs did what the scan relies on (a deferred wait, a download, a 401, a refusal)."""
    home, runs = leak_run["home"], leak_run["runs"]
    states = dict(_rows(home, f"SELECT task_id, state FROM task_instance WHERE dag_id = '{DAG_ID}'"))
    output = runs["dags test"].stdout + runs["dags test"].stderr
    assert states.get("batch") == "success", (states, output[-3000:])
    assert states.get("download") == "success", states
    assert states.get("poke") == "success", states
    assert states.get("wrong_key") == "failed", states
    assert states.get("hostile") == "failed", states
    assert (leak_run["workdir"] / "results.jsonl").read_text().count("\n") == 4
    assert "401" in output, "the wrong key's 401 is not in the output"
    tasks_test = runs["tasks test"]
    assert tasks_test.returncode == 0, (tasks_test.stdout + tasks_test.stderr)[-3000:]
    if "pipeline" in runs:
        assert runs["pipeline"].returncode == 0, runs["pipeline"].stderr[-3000:]


def test_no_key_in_the_airflow_home_logs_or_database(leak_run) -> None:
    home = leak_run["home"]
    logs = (
        [p for p in (home.path / "logs").rglob("*") if p.is_file()] if (home.path / "logs").exists() else []
    )
    assert logs or any(r.stdout for r in leak_run["runs"].values()), "no task log anywhere to scan"
    assert scan_tree(home.path) == []


def test_no_key_in_xcoms_triggers_or_rendered_fields(leak_run) -> None:
    """The same, table by table, so that a leak names its table (and these tables are not empty)."""
    home = leak_run["home"]
    xcoms = _rows(home, "SELECT task_id, key, value FROM xcom")
    assert any(key == "batch_id" for _, key, _ in xcoms), xcoms
    if AIRFLOW_3:  # Airflow 2's `dags test` deletes the trigger row once it ran inline
        triggers = _rows(home, "SELECT kwargs FROM trigger")
        assert triggers, "the deferred task left no trigger row to scan"
    tables = {name for (name,) in _rows(home, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    scanned = {"xcom": xcoms, "task_instance": _rows(home, "SELECT * FROM task_instance")}
    for table in ("trigger", "rendered_task_instance_fields", "dag_run", "log", "task_instance_history"):
        if table in tables:
            scanned[table] = _rows(home, f"SELECT * FROM {table}")
    for table, rows in scanned.items():
        text = repr(rows)
        for secret in SECRETS:
            assert find_secret(secret, text) is None, f"a key is in the {table} table"


def test_no_key_in_what_the_commands_printed(leak_run) -> None:
    for name, run in leak_run["runs"].items():
        output = without_airflow_30_mask_requests(run.stdout + run.stderr)
        for secret in SECRETS:
            assert find_secret(secret, output) is None, f"a key is in the output of {name}"
