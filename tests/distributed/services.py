"""PostgreSQL and Redis from Debian's packages, each on a private port and data dir; never the system's."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = "apt-get install postgresql redis-server (as root; `make distributed` does it where it can)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL server's bin directory that Debian's packages installed, if any."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "postgres").exists()]
    return max(found, key=lambda p: int(p.parent.name), default=None)


def missing_binaries() -> list[str]:
    missing = []
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not all((bin_dir / b).exists() for b in ("initdb", "pg_ctl", "pg_dump")):
        missing.append("PostgreSQL server (/usr/lib/postgresql/*/bin: initdb, pg_ctl, postgres, pg_dump)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: there, the server runs as the `postgres` user the package created.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Postgres:
    """One PostgreSQL cluster on 127.0.0.1:``port``, data in ``root``, password auth, no Unix socket.

    :param root: a new directory for the cluster's data and log.
    """

    user = "airflow"
    database = "airflow"

    def __init__(self, root: Path) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError(f"no PostgreSQL server installed: {INSTALL_HINT}")
        self.bin = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.password = "pg-" + os.urandom(8).hex()
        self.env = {**os.environ, "PGPASSWORD": self.password}

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, cmd: list[str], timeout: float = 120) -> str:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def init(self) -> None:
        self.root.mkdir(parents=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            _as_postgres_user(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.user,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        )
        pwfile.unlink()

    def start(self) -> None:
        # fsync and synchronous commit off: a test database, thrown away at the end; restarts stay clean
        # because pg_ctl stops the server in an orderly way (a checkpoint), unlike a crash.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            _as_postgres_user(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
        )

    def create_database(self) -> None:
        self._run([*self._client("psql", "postgres"), "-c", f"CREATE DATABASE {self.database}"])

    def _client(self, tool: str, database: str | None = None) -> list[str]:
        db = database or self.database
        return [str(self.bin / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", db]

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(
                _as_postgres_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
            )

    def restart(self) -> float:
        """Stop (fast: every connection is cut) and start again; returns the seconds it was down."""
        started = time.monotonic()
        self.stop("fast")
        self.start()
        return time.monotonic() - started

    def dump(self) -> str:
        """The whole database as SQL (every table's rows), as ``pg_dump`` writes it."""
        return self._run([*self._client("pg_dump"), "--no-owner"], timeout=300)

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        import psycopg2

        with (
            psycopg2.connect(
                host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=self.database
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(sql, params)
            rows: list[tuple[object, ...]] = cur.fetchall()
        conn.close()
        return rows


class Redis:
    """One redis-server on 127.0.0.1:``port``, no persistence, in the foreground of a child process.

    :param root: a new directory for its working files and log.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.log = root / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)]
        cmd += ["--save", "", "--appendonly", "no", "--logfile", str(self.log)]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start listening")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def every_value(self) -> list[tuple[str, bytes]]:
        """Every key with all it holds (list items, hash fields, set members), raw bytes, for a leak scan."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        found: list[tuple[str, bytes]] = []
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            if kind == "string":
                parts = [client.get(key) or b""]
            elif kind == "list":
                parts = client.lrange(key, 0, -1)
            elif kind == "hash":
                parts = [b for kv in client.hgetall(key).items() for b in kv]
            elif kind == "set":
                parts = list(client.smembers(key))
            elif kind == "zset":
                parts = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            else:
                parts = [client.dump(key) or b""]
            found.append((key.decode(errors="replace"), key + b"\n" + b"\n".join(parts)))
        client.close()
        return found
