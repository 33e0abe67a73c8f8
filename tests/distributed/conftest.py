"""The distributed deployment as a module fixture; skipped, with the install command, where it cannot run."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from tests.conftest import connection_json
from tests.distributed.deployment import REPO, Deployment
from tests.distributed.services import INSTALL_HINT, missing_binaries

ROOT = REPO / ".scratch" / "distributed"
# Realistic latency on every API call; one line a second, so that a 240-line batch is four minutes of
# emulator work. The scenario jumps the emulator clock forward once the waits it tests are in place.
EMULATOR_ARGS = ["--latency", "0.05", "--validation-seconds", "2", "--lines-per-second", "1"]
EMULATOR_ARGS += ["--finalizing-seconds", "2"]

REPORT: list[str] = []
ACTIVE: list[Deployment] = []


def report(line: str) -> None:
    """A measurement: printed at the end of the pytest run, kept in .scratch/distributed/measurements.txt."""
    REPORT.append(line)
    with (ROOT / "measurements.txt").open("a") as f:
        f.write(line + "\n")


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("distributed scenario: measurements")
        for line in REPORT:
            terminalreporter.write_line(line)


def _why_not() -> str | None:
    missing = missing_binaries()
    if missing:
        return f"needs {' and '.join(missing)}: {INSTALL_HINT}"
    for module in ("airflow.providers.celery", "psycopg2"):
        if importlib.util.find_spec(module) is None:
            return f"needs {module}: make venv installs it (the `distributed` extra) on Airflow 3.3.2"
    return None


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    api_key = "dist-" + secrets.token_hex(12)
    deployment = Deployment(ROOT, api_key, EMULATOR_ARGS)

    # A SIGTERM (CI cancelling the job) still stops every process and the database.
    def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        try:
            deployment.start()
        except BaseException:
            print(deployment.tails())
            raise
        # The test process reaches the emulator with its own connection, to make a batch outside Airflow.
        os.environ["AIRFLOW_CONN_MKA1_OUTSIDE"] = connection_json(deployment.emulator_url, api_key)
        for name, seconds in deployment.timings.items():
            report(f"startup: {name}: {seconds:.1f} s")
        ACTIVE.append(deployment)
        yield deployment
    finally:
        ACTIVE.clear()
        os.environ.pop("AIRFLOW_CONN_MKA1_OUTSIDE", None)
        deployment.stop()
        signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed scenario step shows the end of every component's log."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and ACTIVE:
        rep.sections.append(("deployment logs", ACTIVE[0].tails()))
