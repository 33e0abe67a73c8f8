"""The progress figures and lines a person watching a wait reads: pure functions, checked without a server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_batches.progress import Progress, batch_progress, describe_progress, format_duration
from tests.conftest import make_batch


def test_a_running_batch_reports_share_failures_rate_and_time_left() -> None:
    batch = make_batch("in_progress", total=60, completed=22, failed=2, in_progress_at=10)
    progress = batch_progress(batch, now=20)
    assert progress == Progress("in_progress", 60, 22, 2, in_status_for=10, rate=2.4, seconds_left=15)
    assert progress.percent == 40
    assert (
        describe_progress(progress)
        == "in_progress: 40% (24 of 60 done, 2 failed), 2.4 requests/s, about 15 s left"
    )


def test_a_long_batch_speaks_in_minutes_hours_and_days() -> None:
    batch = make_batch("in_progress", total=50_000, completed=200, failed=22, in_progress_at=0)
    line = describe_progress(batch_progress(batch, now=3600), still=True)
    assert line == (
        "still in_progress after 60 min: 0% (222 of 50000 done, 22 failed), 3.7 requests/min, "
        "about 9 d 8 h left"
    )


def test_nothing_moved_says_for_how_long() -> None:
    assert describe_progress(batch_progress(make_batch("validating"), now=12 * 60), still=True) == (
        "still validating after 12 min"
    )
    finalizing = make_batch(
        "finalizing", total=60, completed=57, failed=3, in_progress_at=5, finalizing_at=30
    )
    assert describe_progress(batch_progress(finalizing, now=35), still=True) == (
        "still finalizing after 5 s: 100% (60 of 60 done, 3 failed)"
    )


def test_before_any_line_is_done_there_is_no_rate() -> None:
    progress = batch_progress(make_batch("in_progress", total=60, in_progress_at=10), now=20)
    assert (progress.rate, progress.seconds_left) == (None, None)
    assert describe_progress(progress) == "in_progress: 0% (0 of 60 done, 0 failed), none done yet"


def test_terminal_and_unknown_statuses_report_counts_only() -> None:
    completed = make_batch("completed", total=60, completed=57, failed=3, in_progress_at=1, completed_at=12)
    assert describe_progress(batch_progress(completed, now=13)) == "completed: 100% (60 of 60 done, 3 failed)"
    unknown = batch_progress(make_batch("paused_by_vendor", total=6, completed=1), now=5)
    assert describe_progress(unknown, still=True) == "paused_by_vendor: 16% (1 of 6 done, 0 failed)"


def test_a_clock_behind_the_servers_gives_no_negative_figures() -> None:
    batch = make_batch("in_progress", total=60, completed=30, in_progress_at=100)
    progress = batch_progress(batch, now=90)
    assert progress.in_status_for == 0 and progress.rate is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0 s"), (45.9, "45 s"), (89, "89 s"), (90, "2 min"), (12 * 60, "12 min"), (200 * 60, "3 h 20 min"),
     (3 * 3600, "3 h"), (52 * 3600, "2 d 4 h"), (48 * 3600, "2 d")],
)  # fmt: skip
def test_format_duration(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


huge = st.integers(min_value=0, max_value=10**400)


@given(
    status=st.sampled_from(["validating", "in_progress", "finalizing", "completed", "cancelling", "odd"]),
    total=huge,
    completed=huge,
    failed=huge,
    stamp=st.integers(min_value=-(10**400), max_value=10**400),
    now=st.floats(min_value=0, max_value=4e9),
    still=st.booleans(),
)
def test_any_batch_a_server_sends_gives_a_line(status, total, completed, failed, stamp, now, still) -> None:
    stamps = {"created_at": stamp, "in_progress_at": stamp, "finalizing_at": stamp, "cancelling_at": stamp}
    progress = batch_progress(make_batch(status, total, completed, failed, **stamps), now=now)
    assert progress.percent is None or 0 <= progress.percent <= 100
    for figure in (progress.in_status_for, progress.rate, progress.seconds_left):
        assert figure is None or 0 <= figure <= 1e12
    assert describe_progress(progress, still=still).startswith(("still ", status))
