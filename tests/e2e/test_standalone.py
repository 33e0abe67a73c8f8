"""
The production shape: `airflow standalone` (scheduler, dag processor, triggerer, API server, LocalExecutor on
SQLite) runs the pipeline DAG, and the wait really happens in the triggerer. Once per CI run (Airflow 3.3).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_provider_batches.emulator import run_emulator
from tests.conftest import API_KEY
from tests.e2e.conftest import BIN, airflow_env

pytestmark = [pytest.mark.e2e, pytest.mark.standalone]

DAG_ID = "example_mka1_batch_pipeline"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Standalone:
    def __init__(self, home: Path, base_url: str) -> None:
        port = free_port()
        self.home = home
        self.root = f"http://127.0.0.1:{port}"
        self.api = f"{self.root}/api/v2"
        self.log_path = home / "standalone.log"
        self.env = airflow_env(home, base_url) | {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "airflow"), "standalone"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Stop standalone and every component it started: they share its process group."""
        if self.process is None:
            return
        pgid = self.process.pid
        for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace)
                os.killpg(pgid, 0)  # children still alive?
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.api + path, timeout=10)

    def wait_for(self, what: str, check, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log()[-5000:]
            try:
                result = check()
            except requests.RequestException:
                result = None
            if result:
                return result
            time.sleep(1)
        raise AssertionError(f"timed out waiting for {what}\n{self.log()[-5000:]}")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> Iterator[Standalone]:
    # Slow enough (about 12 s for 60 lines) that the wait clearly happens in the triggerer.
    with run_emulator(
        api_keys=(API_KEY,), validation_seconds=1, lines_per_second=6, finalizing_seconds=1
    ) as emu:
        home = tmp_path_factory.mktemp("standalone")
        airflow = Standalone(home, emu.base_url)
        migrated = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=airflow.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        airflow.start()
        try:
            airflow.wait_for("the DAG to be parsed", lambda: airflow.get(f"/dags/{DAG_ID}").ok, timeout=240)
            yield airflow
        finally:
            airflow.stop()


def test_pipeline_runs_with_the_wait_deferred_to_the_triggerer(standalone: Standalone, tmp_path) -> None:
    workdir = tmp_path / "pipeline"
    created = requests.post(
        f"{standalone.api}/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": {"workdir": str(workdir)}},
        timeout=10,
    )
    assert created.ok, created.text
    run_id = created.json()["dag_run_id"]

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
    assert "Trigger fired event" in trigger_log and ": completed (57/60 completed, 3 failed)." in trigger_log
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["answered"], summary["failed"]) == (57, ["q-23", "q-41", "q-7"])
    every_log = [standalone.log(), *(p.read_text(errors="replace") for p in standalone.home.rglob("*.log*"))]
    assert not [text for text in every_log if API_KEY in text]


def test_connection_form_in_the_api_server(standalone: Standalone) -> None:
    """What the UI shows a user adding an `mka1` connection: our fields, the key relabelled and hidden."""
    hook_meta = requests.get(f"{standalone.root}/ui/connections/hook_meta", timeout=30).json()
    (mka1,) = [meta for meta in hook_meta if meta["connection_type"] == "mka1"]
    assert mka1["hook_name"] == "MKA1"
    assert {"on_behalf_of", "base_path", "timeout", "max_retries", "verify"} <= set(mka1["extra_fields"])
    assert mka1["standard_fields"]["password"]["title"] == "API key"
    assert mka1["standard_fields"]["host"]["title"] == "Base URL"
    assert mka1["standard_fields"]["login"]["hidden"] is True
