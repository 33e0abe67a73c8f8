"""Shared fixtures: an isolated Airflow home and an emulator of the MKA1 API on 127.0.0.1."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its configuration when first imported: isolate it before any test module imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mka1-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"

API_KEY = "test-key-5f1c9e"
OTHER_API_KEY = "other-key-77ab02"
# Fast enough for a quick suite, slow enough that a test can see each status on the way.
FAST_TIMINGS = {"validation_seconds": 0.2, "lines_per_second": 200.0, "finalizing_seconds": 0.2}


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[object]:
    from airflow_provider_batches.emulator import run_emulator

    with run_emulator(api_keys=(API_KEY, OTHER_API_KEY), **FAST_TIMINGS) as emu:
        yield emu


@pytest.fixture
def emulator(emulator_session) -> Iterator[object]:
    """The shared emulator, with faults, latency, rate limit and call counts reset around each test."""
    emu = emulator_session
    emu.clear_faults()
    emu.set_latency(0.0)
    emu.set_rate_limit(None)
    emu.reset_calls()
    yield emu
    emu.clear_faults()
    emu.set_latency(0.0)
    emu.set_rate_limit(None)


def connection_json(base_url: str, api_key: str = API_KEY, **extra: object) -> str:
    return json.dumps({"conn_type": "mka1", "host": base_url, "password": api_key, "extra": extra})


@pytest.fixture
def mka1_conn(emulator, monkeypatch) -> str:
    """`mka1_default` pointing at the emulator, as a user would set it: an AIRFLOW_CONN_ variable."""
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", connection_json(emulator.base_url))
    return "mka1_default"
