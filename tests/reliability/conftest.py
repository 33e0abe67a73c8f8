"""Reliability suite plumbing: the fault matrix's table (printed at the end of the run and written to a file)
and a guard that fails any reliability test whose log output carries the API key."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.reliability.matrix import MATRIX, render_matrix
from tests.reliability.support import find_secret

REPORT = Path(__file__).resolve().parents[2] / ".scratch" / "reliability" / "matrix.txt"


@pytest.fixture(autouse=True)
def _no_key_in_logs(caplog, capfd):
    """Every log record and every line printed by every reliability test is scanned for the key: the
    stdlib records (caplog) and what Airflow 3's structlog task loggers write to stdout/stderr (capfd)."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capfd.readouterr()
    sys.stdout.write(out)  # give it back, so that pytest still shows it for a failed test
    sys.stderr.write(err)
    for name, text in [("stdout", out), ("stderr", err)]:
        hit = find_secret(API_KEY, text)
        assert hit is None, f"the API key leaked to {name}: ...{text[max(0, text.find(hit) - 200) :][:400]!r}"
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
