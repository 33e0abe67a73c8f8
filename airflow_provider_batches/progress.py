"""What a person watching a wait reads about its batch: progress figures and their wording (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from airflow_provider_batches.models import Batch, BatchStatus

# Figures from a hostile or confused server (counts or timestamps of any size) are capped here, so that no
# arithmetic overflows a float: about 31,700 years of seconds, or requests per second.
_CAP = Fraction(10**12)


@dataclass(frozen=True)
class Progress:
    """
    A batch's progress at one poll.

    :param status: the batch's status, as the API names it.
    :param total: requests in the batch (0 while the API does not know yet).
    :param completed: requests answered so far.
    :param failed: requests failed so far.
    :param in_status_for: seconds since the batch entered its status, by the batch's own timestamps
        (``None`` when the API gives none).
    :param rate: requests done (completed or failed) per second since the lines started, ``None`` before.
    :param seconds_left: the lines' remaining time at that rate, ``None`` when there is no rate yet.
    """

    status: str
    total: int
    completed: int
    failed: int
    in_status_for: float | None = None
    rate: float | None = None
    seconds_left: float | None = None

    @property
    def done(self) -> int:
        """Requests done so far: completed or failed."""
        return self.completed + self.failed

    @property
    def percent(self) -> int | None:
        """Share of the requests done, 0 to 100 (rounded down), ``None`` while the total is unknown."""
        return min(100, self.done * 100 // self.total) if self.total > 0 else None


def _status_began(batch: Batch) -> int | None:
    status = batch.status
    if status == BatchStatus.VALIDATING:
        return batch.created_at
    if status == BatchStatus.IN_PROGRESS:
        return batch.in_progress_at
    if status == BatchStatus.FINALIZING:
        return batch.finalizing_at
    if status == BatchStatus.CANCELLING:
        return batch.cancelling_at
    return None


def _seconds(value: Fraction) -> float:
    return float(min(max(value, Fraction(0)), _CAP))


def batch_progress(batch: Batch, now: float) -> Progress:
    """
    The figures a person wants while a batch runs, from one read of it: nothing is kept between polls, so
    a sensor's reschedule pokes (each in a new process) report the same rate as a long-lived wait.

    :param batch: the batch as just read.
    :param now: the current time, Unix seconds (on the clock the API's timestamps use).
    """
    counts = batch.request_counts
    status = batch.status.value if isinstance(batch.status, BatchStatus) else str(batch.status)
    began = _status_began(batch)
    in_status_for = _seconds(Fraction(now) - began) if began is not None else None
    rate = seconds_left = None
    done = counts.completed + counts.failed
    running_for = Fraction(now) - batch.in_progress_at if batch.in_progress_at is not None else None
    if batch.status == BatchStatus.IN_PROGRESS and done > 0 and running_for is not None and running_for > 0:
        exact_rate = min(Fraction(done) / running_for, _CAP)
        rate = float(exact_rate)
        seconds_left = _seconds(Fraction(max(counts.total - done, 0)) / exact_rate)
    return Progress(status, counts.total, counts.completed, counts.failed, in_status_for, rate, seconds_left)


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 20 min"``, ``"2 d 4 h"``: as precise as a person needs."""
    whole = int(seconds)
    if whole < 90:
        return f"{whole} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _format_rate(per_second: float) -> str:
    value, unit = per_second, "s"
    if value < 1:
        value, unit = per_second * 60, "min"
    if value < 1:
        value, unit = per_second * 3600, "h"
    return f"{value:.2g} requests/{unit}" if value < 10 else f"{value:.0f} requests/{unit}"


def describe_progress(progress: Progress, *, still: bool = False) -> str:
    """
    One line for the task log, e.g. ``"in_progress: 40% (24 of 60 done, 2 failed), 3.1 requests/s, about
    12 s left"`` or ``"still validating after 12 min"``.

    :param progress: the figures, from :func:`batch_progress`.
    :param still: nothing moved since the last line: say for how long the batch has been in its status.
    """
    head = progress.status
    if still and progress.in_status_for is not None:
        head = f"still {progress.status} after {format_duration(progress.in_status_for)}"
    if progress.total <= 0 and progress.done == 0:
        return head
    percent = "?" if progress.percent is None else progress.percent
    line = f"{head}: {percent}% ({progress.done} of {progress.total} done, {progress.failed} failed)"
    if progress.status != BatchStatus.IN_PROGRESS.value:
        return line
    if progress.rate is None:
        return f"{line}, none done yet" if progress.done == 0 else line
    left = format_duration(progress.seconds_left or 0)
    return f"{line}, {_format_rate(progress.rate)}, about {left} left"
