"""BatchPoller (polling.py): the pace, error budget and deadline of a wait, without I/O or a server."""

from __future__ import annotations

from airflow_provider_batches.exceptions import MKA1AuthenticationError, MKA1ServerError
from airflow_provider_batches.polling import BatchPoller
from tests.conftest import make_batch


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_poller_polls_often_while_validating_and_aims_at_the_end_of_the_lines() -> None:
    clock = FakeClock()
    poller = BatchPoller("batch_x", poll_interval=5, max_poll_interval=100, clock=clock)

    for _ in range(3):
        poller.observe(make_batch("validating"))
        assert 4.5 <= poller.next_sleep() <= 5.5
    poller.observe(make_batch("in_progress", 1000, 0))  # first sight of progress: the anchor
    assert 4.5 <= poller.next_sleep() <= 5.5
    clock.now += 10
    poller.observe(make_batch("in_progress", 1000, 90, 10))  # 10 lines/s: 90 s left
    assert 81 <= poller.next_sleep() <= 99
    clock.now += 90
    poller.observe(make_batch("in_progress", 1000, 990, 0))  # 10 lines/s: 1 s left, but never under 5
    assert 4.5 <= poller.next_sleep() <= 5.5
    for _ in range(3):  # finalizing: completion comes next, keep the delay after it short
        poller.observe(make_batch("finalizing", 1000, 990, 10))
        assert 4.5 <= poller.next_sleep() <= 5.5


def test_poller_doubles_toward_the_maximum_while_nothing_moves() -> None:
    clock = FakeClock()
    poller = BatchPoller("batch_x", poll_interval=5, max_poll_interval=30, clock=clock)
    poller.observe(make_batch("in_progress", 1000, 0))
    sleeps = []
    for _ in range(5):
        clock.now += 10
        poller.observe(make_batch("in_progress", 1000, 0))
        sleeps.append(poller.next_sleep())
    assert 9 <= sleeps[0] <= 11
    assert 18 <= sleeps[1] <= 22
    assert all(27 <= s <= 30 for s in sleeps[2:])


def test_poller_backs_off_in_a_status_it_cannot_read_progress_from() -> None:
    poller = BatchPoller("batch_x", poll_interval=5, max_poll_interval=30, clock=FakeClock())
    sleeps = []
    for _ in range(4):
        poller.observe(make_batch("cancelling"))
        sleeps.append(poller.next_sleep())
    assert (
        4.5 <= sleeps[0] <= 5.5 and 9 <= sleeps[1] <= 11 and 18 <= sleeps[2] <= 22 and 27 <= sleeps[3] <= 30
    )


def test_poller_jitters_within_bounds_and_never_sleeps_past_the_deadline() -> None:
    clock = FakeClock()
    poller = BatchPoller("batch_x", poll_interval=5, max_poll_interval=100, clock=clock)
    poller.observe(make_batch("in_progress", 1000, 0))
    clock.now += 10
    poller.observe(make_batch("in_progress", 1000, 550))  # 55 lines/s: about 8.2 s left
    sleeps = {round(poller.next_sleep(), 3) for _ in range(200)}
    assert len(sleeps) > 50 and min(sleeps) >= 7.3 and max(sleeps) <= 9.1

    poller.deadline = clock.now + 3
    assert poller.next_sleep() == 3
    clock.now += 3
    assert poller.next_sleep() is None


def test_poller_error_budget_counts_consecutive_transient_errors_only() -> None:
    poller = BatchPoller("batch_x", poll_interval=1, max_poll_interval=10, error_budget=2)
    transient = MKA1ServerError(503, "try later", method="GET", path="/batches/batch_x", request_id="r1")

    assert poller.observe_error(transient) and poller.observe_error(transient)
    poller.observe(make_batch("in_progress", 10, 1))  # a good poll resets the count
    assert poller.observe_error(transient) and poller.observe_error(transient)
    assert 1.8 <= poller.next_sleep() <= 2.2  # backs off after errors
    assert not poller.observe_error(transient)

    fresh = BatchPoller("batch_x", poll_interval=1, error_budget=10)
    assert not fresh.observe_error(MKA1AuthenticationError(401, "bad key", request_id="r2"))


def test_poller_words_a_line_when_something_moved_and_every_few_minutes_when_nothing_did(caplog) -> None:
    clock = FakeClock()
    created = int(clock.now)
    poller = BatchPoller("batch_x", poll_interval=30, max_poll_interval=300, clock=clock)
    with caplog.at_level("DEBUG"):
        assert poller.observe(make_batch("validating", created_at=created)) == "Batch batch_x: validating."
        clock.now += 30
        assert poller.observe(make_batch("validating", created_at=created)) is None  # nothing moved
        clock.now += 4 * 60
        assert poller.observe(make_batch("validating", created_at=created)) == (
            "Batch batch_x: still validating after 4 min."
        )
        clock.now += 60
        running = make_batch(
            "in_progress", 600, 290, 10, created_at=created, in_progress_at=int(clock.now) - 100
        )
        assert poller.observe(running) == (
            "Batch batch_x: in_progress: 50% (300 of 600 done, 10 failed), 3 requests/s, about 2 min left."
        )
    assert not caplog.records  # the poller only words lines; its callers log them


def test_poller_words_each_error_as_the_wait_goes_on_or_ends() -> None:
    poller = BatchPoller("batch_x", poll_interval=1, error_budget=1)
    transient = MKA1ServerError(503, "busy", request_id="r1")
    assert poller.observe_error(transient)
    assert poller.error_line(transient).startswith("Polling batch batch_x failed (1 of 1 tolerated in a row)")
    assert not poller.observe_error(transient)
    assert "failed 2 times in a row (error_budget=1); giving up" in poller.error_line(transient)
    permanent = MKA1AuthenticationError(401, "bad key", request_id="r2")
    assert not poller.observe_error(permanent)
    assert "permanent error" in poller.error_line(permanent)


def test_poller_behind_a_lane_does_not_back_off_after_errors_and_knows_a_batch_near_its_end() -> None:
    clock = FakeClock()
    poller = BatchPoller("batch_x", poll_interval=2, max_poll_interval=60, clock=clock, error_backoff=False)
    transient = MKA1ServerError(503, "try later", method="GET", path="/batches/batch_x", request_id="r1")
    assert poller.near_end  # the first poll may find it done
    for _ in range(5):
        assert poller.observe_error(transient)
        assert 1.8 <= poller.next_sleep() <= 2.2  # the lane probes the gateway for it: no doubling
    poller.observe(make_batch("validating"))
    assert not poller.near_end
    poller.observe(make_batch("in_progress", 1000, 0))
    clock.now += 10
    poller.observe(make_batch("in_progress", 1000, 500))  # 500 s left
    assert not poller.near_end
    clock.now += 9.9
    poller.observe(make_batch("in_progress", 1000, 999))  # 0.02 s left
    assert poller.near_end
    poller.observe(make_batch("finalizing", 1000, 1000))
    assert poller.near_end
