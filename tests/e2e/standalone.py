"""`airflow standalone` in a subprocess group: started once per session, logged in as a real user."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.e2e.conftest import BIN, airflow_env

DAG_ID = "example_mka1_batch_pipeline"
USERNAME = "admin"
# Only for this throwaway Airflow home on 127.0.0.1.
PASSWORD = "e2e-admin-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Standalone:
    """A real Airflow with the simple auth manager's login (user ``admin``) and Test enabled."""

    def __init__(self, home: Path, base_url: str) -> None:
        port = free_port()
        self.home = home
        self.root = f"http://127.0.0.1:{port}"
        self.api = f"{self.root}/api/v2"
        self.log_path = home / "standalone.log"
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({USERNAME: PASSWORD}))
        self.env = airflow_env(home, base_url) | {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # Free ports, not 8793/8794: other Airflows may run on this machine.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._token: str | None = None
        self.emulator: Any = None

    def start(self) -> None:
        migrated = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=self.env, capture_output=True, text=True, check=False
        )
        assert migrated.returncode == 0, migrated.stderr[-3000:]
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

    def token(self) -> str:
        if self._token is None:
            answer = requests.post(
                f"{self.root}/auth/token", json={"username": USERNAME, "password": PASSWORD}, timeout=10
            )
            answer.raise_for_status()
            self._token = str(answer.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return requests.request(method, self.api + path, headers=headers, timeout=10, **kwargs)

    def get(self, path: str) -> requests.Response:
        return self.request("GET", path)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
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

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        created = self.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert created.ok, created.text
        return str(created.json()["dag_run_id"])
