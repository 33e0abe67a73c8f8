"""The pacing core of a lane, driven by an explicit clock: no sleeping, no I/O."""

from __future__ import annotations

import pytest

from airflow_provider_batches.pacing import OPEN, PACED, Pacing, PacingRules


def drain(pacing: Pacing, start: float, until: float, step: float = 0.01, backlog: int = 0) -> list[float]:
    """Admission times of the queued calls between ``start`` and ``until`` (keeping ``backlog`` queued)."""
    times, now = [], start
    while now <= until:
        while pacing.waiting < backlog:
            pacing.request(now)
        times += [now for _ in pacing.admit(now)]
        now = round(now + step, 6)
    return times


def test_a_new_lane_lets_calls_through_then_queues_and_ramps_up_while_calls_wait() -> None:
    pacing = Pacing(PacingRules(initial_rate=10), now=0.0)
    first = pacing.request(0.0)
    assert first.admitted_at == 0.0  # a lone call goes at once
    queued = [pacing.request(0.0) for _ in range(200)]
    assert all(t.admitted_at is None for t in queued) and pacing.waiting == 200
    assert pacing.next_admission(0.0) == pytest.approx(0.1)
    admitted = drain(pacing, 0.0, 1.0)
    in_second_two = len(drain(pacing, 1.01, 2.0))
    assert 5 <= len(admitted) <= 16  # about 10 in the first second
    assert in_second_two >= 1.5 * len(admitted)  # slow start: the rate doubles each second of queueing
    assert pacing.mode == OPEN


def test_429_cuts_the_rate_once_per_round_and_says_so_once() -> None:
    pacing = Pacing(PacingRules(initial_rate=40), now=0.0)
    tickets = [pacing.request(0.0) for _ in range(4)] + [pacing.request(0.2) for _ in range(4)]
    in_flight = [t for t in tickets if t.admitted_at is not None] + [t for t in pacing.admit(0.2)]
    change = pacing.rate_limited(in_flight[0], 0.25)
    assert change is not None and change.level == "warning" and "pacing at 20 req/s" in change.message
    assert pacing.mode == PACED and pacing.rate == 20
    # The other calls sent before the cut were sent at the old rate: their 429s do not cut again.
    assert pacing.rate_limited(in_flight[1], 0.26) is None and pacing.rate == 20
    late = pacing.request(5.0)
    assert late.admitted_at == 5.0
    assert pacing.rate_limited(late, 5.02) is None  # no second log line
    assert pacing.rate == pytest.approx(14.0)  # 0.7x for a call sent after the cut


def test_the_rate_rises_additively_while_calls_queue_and_pacing_ends_after_a_quiet_spell() -> None:
    rules = PacingRules(initial_rate=10, quiet_seconds=30)
    pacing = Pacing(rules, now=0.0)
    ticket = pacing.request(0.0)
    pacing.rate_limited(ticket, 0.0)
    assert pacing.rate == 5
    for _ in range(100):
        pacing.request(0.0)
    drain(pacing, 0.0, 4.0)
    assert 5.5 < pacing.rate < 8  # slowly: a few tenths of a request per second, per second
    assert pacing.mode == PACED
    done = drain(pacing, 4.0, 40.0, backlog=50)
    assert pacing.rate > 20  # the slope doubles every 10 s without a 429: a lifted limit is found soon
    change = pacing.succeeded(pacing.request(40.0), 40.0)
    assert done and change is not None and "no 429 for 30 s" in change.message and pacing.mode == OPEN


def test_idle_lane_does_not_raise_its_rate() -> None:
    pacing = Pacing(PacingRules(initial_rate=10), now=0.0)
    pacing.rate_limited(pacing.request(0.0), 0.0)
    for now in range(1, 60):
        pacing.succeeded(pacing.request(float(now)), float(now))  # one call a second: never queued
    assert pacing.rate == 5


def test_retry_after_pauses_the_whole_lane() -> None:
    pacing = Pacing(PacingRules(initial_rate=100, retry_after_cap=60), now=0.0)
    ticket = pacing.request(0.0)
    change = pacing.rate_limited(ticket, 0.1, retry_after=2.0)
    assert change is not None and "Retry-After 2 s" in change.message
    waiting = pacing.request(0.2)
    assert waiting.admitted_at is None
    assert pacing.next_admission(0.2) == pytest.approx(1.9)
    assert pacing.admit(2.0) == []
    assert pacing.admit(2.1) == [waiting]
    pacing.rate_limited(pacing.request(3.0), 3.0, retry_after=3600)
    assert pacing.paused_until == 63.0  # capped


def test_a_lane_that_is_down_probes_one_call_at_a_time_with_backoff_and_is_up_at_the_first_answer() -> None:
    pacing = Pacing(PacingRules(probe_base=0.5, probe_cap=4), now=0.0)
    first = pacing.request(0.0)
    change = pacing.failed(first, 0.1)
    assert change is not None and pacing.down
    waiters = [pacing.request(0.1, since=0.0)] + [pacing.request(0.2) for _ in range(50)]
    assert pacing.next_admission(0.1) == pytest.approx(0.5)
    probe = pacing.admit(0.6)
    assert probe == [waiters[0]] and probe[0].probe  # the longest waiter probes, alone
    assert pacing.admit(5.0) == [] and pacing.next_admission(5.0) is None  # until the probe is back
    pauses = []
    for _ in range(5):
        assert pacing.failed(probe[0], 10.0) is None  # one log line for the whole outage
        pauses.append(pacing.next_admission(10.0))
        probe = pacing.admit(10.0 + pauses[-1])
        assert len(probe) == 1
    assert pauses == [1.0, 2.0, 4.0, 4.0, 4.0]
    change = pacing.succeeded(probe[0], 30.0)
    assert change is not None and "answers again after 6 failed probe(s)" in change.message
    assert not pacing.down
    assert len(pacing.admit(30.0)) >= 1  # everyone else goes again at the lane's rate, at once


def test_a_failed_probe_is_a_failed_try_of_every_waiting_call() -> None:
    pacing = Pacing(PacingRules(), now=0.0)
    pacing.failed(pacing.request(0.0), 0.0)
    waiting = [pacing.request(0.1) for _ in range(3)]
    assert pacing.failed_waiters() == waiting
    assert pacing.waiting == 0 and pacing.failed_waiters() == []


def test_the_longest_waiter_goes_first_and_an_urgent_call_is_not_starved() -> None:
    pacing = Pacing(PacingRules(initial_rate=1, urgent_head_start=30), now=0.0)
    pacing.rate_limited(pacing.request(0.0), 0.0)  # paced at the floor of 0.5 req/s
    old = pacing.request(1.0, since=-100.0)  # back from a 429: keeps its place
    crowd = [pacing.request(1.0 + i / 1000) for i in range(999)]
    urgent = pacing.request(2.0, urgent=True)
    order = []
    now = 2.0
    while len(order) < 3:
        now += 0.5
        order += pacing.admit(now)
    assert order[:2] == [old, urgent]  # 999 others asked earlier, but less than 30 s earlier
    assert order[2] is crowd[0]


def test_a_cancelled_call_leaves_the_queue() -> None:
    pacing = Pacing(PacingRules(initial_rate=1), now=0.0)
    pacing.request(0.0)
    gone, stays = pacing.request(0.0), pacing.request(0.0)
    pacing.cancel(gone)
    assert pacing.waiting == 1
    assert pacing.admit(10.0) == [stays]


def test_a_ceiling_is_never_passed() -> None:
    pacing = Pacing(PacingRules(ceiling=3, initial_rate=10), now=0.0)
    assert pacing.rate == 3
    for _ in range(100):
        pacing.request(0.0)
    assert len(drain(pacing, 0.0, 10.0)) <= 31
    assert pacing.rate == 3
