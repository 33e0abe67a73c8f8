"""
The distributed deployment: PostgreSQL, Redis, the emulator and each Airflow component in its own process.

Every process runs in its own session, so that a kill takes the whole component (a triggerer's runner, a
Celery worker's pool and task processes) as losing its machine would. Nothing here knows the scenario.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.distributed.services import Postgres, Redis, free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAGS = Path(__file__).resolve().parent / "dags"
T = TypeVar("T")

# The settings that make failover fast enough for a test, each with the production default it replaces.
FAILOVER_SETTINGS = {
    # A triggerer heartbeats every second (default 5); it counts as dead after 30 s without one (the
    # default, kept on purpose): a triggerer's first trigger builds its in-process execution API, which
    # held up its heartbeat for 20-27 s on a loaded 2-core machine. A lower threshold then hands the
    # triggers of a live triggerer to the other needlessly (Airflow 3.3.2 then calls on_kill on the copy
    # left behind, which leaves the batch running: see docs/pages/deployments.md).
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "30",
    # Each triggerer claims at most 4 new triggers a loop (default 50), which spreads 21 triggers over both.
    "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": "4",
    # A running task whose worker stops heartbeating is failed (and retried) after 30 s (default 300),
    # checked every 2 s (default 10). Task processes heartbeat every 5 s ([workers] min_heartbeat_interval).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    # Celery: acks_late (the provider's default) keeps a task's message unacknowledged until it finishes,
    # and Redis redelivers an unacknowledged message only after visibility_timeout (the provider's default,
    # 24 h). Left as they are: a lost worker's task is retried by the scheduler's heartbeat check above, as
    # a new try; a redelivery of the old try's message would only be refused by the API server.
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
}


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (requests.RequestException, OSError) as exc:
            result, last_error = None, exc
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last error: {last_error})")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])


def process_tree(root: int) -> dict[int, int]:
    """``root`` and every process descending from it: pid -> start time (which tells a reused pid apart)."""
    stats = {int(e): st for e in os.listdir("/proc") if e.isdigit() and (st := _stat(int(e))) is not None}
    if root not in stats:
        return {}
    tree, frontier = {root: stats[root][1]}, {root}
    while frontier:
        children = {pid for pid, (ppid, _) in stats.items() if ppid in frontier}
        tree.update({pid: stats[pid][1] for pid in children})
        frontier = children
    return tree


def kill_all(tree: dict[int, int]) -> None:
    """SIGKILL each process of ``tree`` that is still the same process (same pid and start time)."""
    for pid, started in tree.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Component:
    """One Airflow component (or the emulator) as its own process, logging to ``log``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.cmd, self.env, self.log = name, cmd, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self._tree: dict[int, int] = {}
        self.stopped_on_purpose = False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def owns(self, pid: int) -> bool:
        return self.alive() and pid in process_tree(self.pid)

    def kill(self) -> None:
        """SIGKILL the component and every process under it at once: nothing gets to clean up."""
        self.stopped_on_purpose = True
        kill_all(process_tree(self.pid))
        assert self.process is not None
        self.process.wait(timeout=30)

    def freeze(self) -> None:
        """SIGSTOP the component's processes: alive, but silent (a long pause, a partitioned machine)."""
        for pid in process_tree(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in process_tree(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM, without waiting: each component shuts down in its own way."""
        if self.alive():
            assert self.process is not None
            self._tree.update(process_tree(self.pid))
            self.process.send_signal(signal.SIGTERM)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM, ``grace`` seconds to exit, then SIGKILL whatever is left of the component."""
        self.stopped_on_purpose = True
        if self.process is None:
            return
        if self.alive():
            self._tree.update(process_tree(self.pid))
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        kill_all(self._tree)
        self.process.wait(timeout=30)

    def tail(self, chars: int = 4000) -> str:
        return f"--- {self.name} ({self.log}) ---\n" + self.log.read_text(errors="replace")[-chars:]


class Deployment:
    """Everything the scenario runs on, under ``root``. Start with :meth:`start`, always :meth:`stop`.

    :param root: a new directory for every data directory and log.
    :param api_key: the only key the emulator accepts; it reaches Airflow only as a connection's password.
    :param emulator_args: timing flags of ``python -m airflow_provider_batches.emulator``.
    """

    def __init__(self, root: Path, api_key: str, emulator_args: list[str]) -> None:
        self.root = root
        self.api_key = api_key
        self.logs = root / "logs"
        self.home = root / "airflow"
        self.postgres = Postgres(root / "postgres")
        self.redis = Redis(root / "redis")
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}/api/v2"
        self.fernet_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.jwt_secret = secrets.token_urlsafe(64)
        self.secret_key = secrets.token_urlsafe(16)
        self.emulator = Component(
            "emulator",
            [
                sys.executable,
                "-m",
                "airflow_provider_batches.emulator",
                "--port",
                "0",
                "--api-key",
                api_key,
                "--data-dir",
                str(root / "emulator"),
                *emulator_args,
            ],
            dict(os.environ),
            self.logs / "emulator.log",
        )
        self.emulator_url = ""
        self.components: dict[str, Component] = {}
        self.triggerer_job_ids: dict[int, str] = {}
        # Components that exited on their own and were restarted: (name, when).
        self.restarts: list[tuple[str, float]] = []
        self._stopping = threading.Event()
        self._restarting = threading.Lock()
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self.timings: dict[str, float] = {}

    def env(self, **extra: str) -> dict[str, str]:
        """The configuration every component shares (as on every machine of a cluster), plus ``extra``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=str(self.home),
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=self.postgres.url,
            AIRFLOW__CELERY__BROKER_URL=self.redis.url,
            AIRFLOW__CELERY__RESULT_BACKEND="db+" + self.postgres.url,
            # Shared secrets: the fernet key encrypts connections and trigger kwargs in the database; the
            # JWT secret signs the tokens workers and triggerers use with the API server.
            AIRFLOW__CORE__FERNET_KEY=self.fernet_key,
            AIRFLOW__API_AUTH__JWT_SECRET=self.jwt_secret,
            AIRFLOW__API__SECRET_KEY=self.secret_key,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.api_port}/execution/",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            **FAILOVER_SETTINGS,
        )
        env.update(extra)
        return env

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = time.monotonic() - started

    def start(self) -> None:
        self.logs.mkdir(parents=True)
        t = time.monotonic()
        self.postgres.init()
        self.postgres.start()
        self.postgres.create_database()
        self.redis.start()
        self._timed("postgres + redis up", t)

        self.emulator.start()
        self.emulator_url = wait_for("the emulator", self._emulator_url, timeout=60)

        t = time.monotonic()
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        (self.logs / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        assert migrate.returncode == 0, (migrate.stdout + migrate.stderr)[-4000:]
        self._timed("airflow db migrate", t)

        t = time.monotonic()
        for name, args in (
            ("api-server", ["api-server"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
            ("worker-a", ["celery", "worker", "-H", "worker-a@%h"]),
            ("worker-b", ["celery", "worker", "-H", "worker-b@%h"]),
        ):
            # Each worker serves its task logs on a port of its own, as on a machine of its own.
            extra = {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())} if "worker" in name else {}
            self._launch(name, args, extra)
        # One triggerer after the other: the job table names a triggerer by id only, so the order in which
        # their jobs appear tells which process is which.
        for name in ("triggerer-1", "triggerer-2"):
            self._launch(name, ["triggerer"], {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())})
            self._learn_triggerer_job(name)
        wait_for("the API server", lambda: requests.get(f"{self.api}/version", timeout=5).ok, timeout=180)
        self.add_connection()
        for name in ("worker-a", "worker-b"):
            self.wait_worker_ready(name)
        self._timed("airflow components up", t)
        self._supervisor.start()

    def _launch(self, name: str, args: list[str], extra: dict[str, str]) -> None:
        component = Component(
            name, [str(BIN / "airflow"), *args], self.env(**extra), self.logs / f"{name}.log"
        )
        self.components[name] = component
        component.start()

    def _new_triggerer_job(self, known: set[int]) -> int | None:
        rows = self.postgres.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
        new = [int(r[0]) for r in rows if int(r[0]) not in known]
        assert len(new) <= 1, new
        return new[0] if new else None

    def _emulator_url(self) -> str | None:
        assert self.emulator.alive(), self.emulator.tail()
        for line in self.emulator.log.read_text(errors="replace").splitlines():
            if line.startswith("MKA1 emulator listening on "):
                return line.split()[4]
        return None

    def add_connection(self) -> None:
        """``mka1_default`` in the metadata database (the key fernet-encrypted), as the UI adds it."""
        body = {
            "connection_id": "mka1_default",
            "conn_type": "mka1",
            "host": self.emulator_url,
            "password": self.api_key,
        }
        answer = requests.post(f"{self.api}/connections", json=body, timeout=30)
        assert answer.status_code == 201, answer.text

    def worker(self, name: str) -> Component:
        return self.components[name]

    def wait_worker_ready(self, name: str, timeout: float = 180) -> None:
        component = self.components[name]
        # Celery logs "<name>@<host> ready." once it consumes from the queue.
        marker = f"{name}@"

        def ready() -> bool:
            assert component.alive(), component.tail()
            text = component.log.read_text(errors="replace")
            return any(marker in line and " ready." in line for line in text.splitlines()[-400:])

        wait_for(f"{name} to be ready", ready, timeout=timeout)

    def _learn_triggerer_job(self, name: str) -> None:
        known = set(self.triggerer_job_ids)
        job_id = wait_for(f"{name}'s job", lambda: self._new_triggerer_job(known), timeout=180)
        self.triggerer_job_ids[job_id] = name

    def restart_component(self, name: str) -> None:
        """Start ``name`` again, as its service manager would (same command, settings and log)."""
        with self._restarting:
            old = self.components[name]
            fresh = Component(name, old.cmd, old.env, old.log)
            self.components[name] = fresh
            fresh.start()
            if name.startswith("triggerer"):
                self._learn_triggerer_job(name)

    def _supervise(self) -> None:
        """Restart a component that exits on its own, as systemd (Restart=always) or Kubernetes would."""
        while not self._stopping.wait(1):
            for name, component in list(self.components.items()):
                if not component.alive() and not component.stopped_on_purpose and not self._stopping.is_set():
                    self.restarts.append((name, time.monotonic()))
                    self.restart_component(name)

    def triggerer_jobs(self) -> dict[int, str]:
        """Triggerer job id -> component name, for the triggerers alive with a fresh heartbeat."""
        rows = self.postgres.query(
            "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' "
            "AND latest_heartbeat > now() - interval '5 seconds'"
        )
        alive = {int(r[0]) for r in rows}
        return {j: n for j, n in self.triggerer_job_ids.items() if j in alive and self.components[n].alive()}

    def restarted_since(self, since: float) -> list[str]:
        """The components that exited on their own after ``since`` (monotonic) and were restarted."""
        return [name for name, when in self.restarts if when >= since]

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(method, self.api + path, timeout=30, **kwargs)
        assert answer.ok, f"{method} {path}: {answer.status_code} {answer.text[:2000]}"
        return answer.json()

    def every_log(self) -> list[Path]:
        return [
            p for p in self.root.rglob("*") if p.is_file() and (".log" in p.name or p.parent.name == "logs")
        ]

    def tails(self) -> str:
        """The end of every log, and the job, trigger and task tables: what a failed step shows."""
        parts = [c.tail() for c in [self.emulator, *self.components.values()]]
        for sql in (
            "SELECT id, job_type, state, start_date, latest_heartbeat FROM job ORDER BY id",
            "SELECT id, triggerer_id, created_date FROM trigger ORDER BY id",
            "SELECT dag_id, task_id, map_index, state, try_number, trigger_id, pid FROM task_instance",
        ):
            try:
                parts.append(f"--- {sql}\n" + "\n".join(map(str, self.postgres.query(sql))))
            except Exception as exc:  # the database may be what failed
                parts.append(f"--- {sql}: {exc}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop everything that was started, whatever state the run left it in."""
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=200)
        for component in self.components.values():
            component.terminate()
        for component in self.components.values():
            component.stop()
        self.emulator.stop()
        self.redis.stop()
        with contextlib.suppress(RuntimeError):
            self.postgres.stop()
