"""Reliability suite plumbing: the fault matrix's table (printed at the end of the run and written to a file)
and a guard that fails any reliability test whose log output carries the API key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.reliability.matrix import MATRIX, render_matrix
from tests.reliability.support import find_secret

REPORT = Path(__file__).resolve().parents[2] / ".scratch" / "reliability" / "matrix.txt"


@pytest.fixture(autouse=True)
def _no_key_in_logs(caplog):
    """Every log record of every reliability test (the hook's, the operators', Airflow's) is scanned."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        hit = find_secret(API_KEY, text)
        assert hit is None, f"the API key leaked into a log record of {record.name}: {text[:300]!r}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not MATRIX.cells:
        return
    table = render_matrix(MATRIX)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(table + "\n", encoding="utf-8")
    terminalreporter.write_sep("=", "MKA1 fault matrix (fault x way of waiting -> outcome, requests made)")
    terminalreporter.write_line(table)
    terminalreporter.write_line(f"(also written to {REPORT})")
