"""A real Airflow, in subprocesses, on SQLite, with the example DAGs and `mka1_default` at the emulator."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS

from tests.conftest import API_KEY, connection_json

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class AirflowHome:
    path: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def xcoms(self, dag_id: str) -> dict[tuple[str, str], Any]:
        """Every XCom of the DAG's runs, by (task_id, key), read from the metadata database."""
        with sqlite3.connect(self.path / "airflow.db") as db:
            rows = db.execute("SELECT task_id, key, value FROM xcom WHERE dag_id = ?", (dag_id,)).fetchall()
        # SQLite hands back JSON scalars already decoded, and strings or bytes still encoded.
        return {
            (task_id, key): json.loads(v) if isinstance(v, str | bytes) else v for task_id, key, v in rows
        }


def airflow_env(home: Path, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "example_dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW_CONN_MKA1_DEFAULT=connection_json(base_url),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


@pytest.fixture(scope="module")
def airflow_home(emulator_session, tmp_path_factory) -> Iterator[AirflowHome]:
    path = tmp_path_factory.mktemp("airflow-home")
    home = AirflowHome(path, airflow_env(path, emulator_session.base_url))
    migrated = home.run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield home


@pytest.fixture(scope="session")
def standalone(tmp_path_factory) -> Iterator[Any]:
    """One `airflow standalone` (3.x) shared by every test that needs it, with its own slow emulator."""
    from airflow_provider_batches.emulator import run_emulator
    from tests.e2e.standalone import DAG_ID, Standalone

    # Slow enough (about 12 s for 60 lines) that the wait clearly happens in the triggerer.
    with run_emulator(
        api_keys=(API_KEY,), validation_seconds=1, lines_per_second=6, finalizing_seconds=1
    ) as emu:
        airflow = Standalone(tmp_path_factory.mktemp("standalone"), emu.base_url)
        airflow.emulator = emu
        airflow.start()
        try:
            airflow.wait_for("the DAG to be parsed", lambda: airflow.get(f"/dags/{DAG_ID}").ok, timeout=240)
            yield airflow
        finally:
            airflow.stop()


__all__ = ["API_KEY", "AirflowHome", "airflow_env"]


def without_airflow_30_mask_requests(output: str) -> str:
    # Airflow 3.0's in-process supervisor (what `dags test` runs) logs every message a task sends it at
    # debug level, MaskSecret included, so the very call that masks a secret prints it: Airflow's own
    # connection lookup does it for every password. 3.1 and later do not; this drops only those lines.
    if AIRFLOW_V_3_1_PLUS or not AIRFLOW_V_3_0_PLUS:
        return output
    return "\n".join(line for line in output.splitlines() if "msg=MaskSecret(" not in line)
