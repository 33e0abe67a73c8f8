"""
The pacing of one lane of API calls (one API key and end user): how fast its calls may go, whether the
gateway is down for it, and whose call goes next. Pure: it never sleeps, sends or reads a clock (every
method takes ``now``), so that its rules are tested without sleeping; :mod:`.transport.lane` drives it.

The rules, in one place:

- **Rate (AIMD).** A new lane starts at ``initial_rate`` calls a second and doubles it every second in
  which calls had to queue (slow start), so that a fleet of waits does not meet an unknown limit with a
  burst of thousands. A 429 cuts the rate multiplicatively (once per round: a 429 of a call admitted
  before the last cut does not cut again); while calls queue, the rate then grows additively, by
  ``increase`` of the rate at the last cut per second, the slope doubling every ``quiet_seconds / 3``
  without a 429 so that a lifted limit is found in seconds, not minutes. After ``quiet_seconds``
  without a 429 the lane stops pacing (back to slow start) and says so. The rate stays within
  ``[floor, ceiling]``.
- **Retry-After.** A 429's ``Retry-After`` / ``retry-after-ms`` pauses the whole lane that long.
- **Down.** A transient failure (5xx, 408, network) with no success since puts the lane *down*: one call
  at a time probes the gateway, with exponential backoff between probes (``probe_base`` doubling up to
  ``probe_cap``); every call waiting in the lane counts each failed probe as its own failed try. The
  first answer that is not a transient failure brings the lane up at once.
- **Fairness.** The call that has waited longest goes first; a call marked urgent (its batch is about to
  end) counts as having waited ``urgent_head_start`` seconds longer, so 999 others cannot starve it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

OPEN, PACED = "open", "paced"
PROBE_CAP = 8.0
"""The longest pause between two probes of a gateway that is down, seconds, by default."""


@dataclass(frozen=True)
class PacingRules:
    """
    The constants of a lane's pacing.

    :param ceiling: the most calls a second, whatever the gateway allows (the connection's
        ``max_requests_per_second``), or ``None``.
    :param initial_rate: calls a second of a new lane, before slow start doubles it.
    :param floor: the slowest rate a lane is ever cut to, calls a second.
    :param decrease: the factor a 429 multiplies the rate by.
    :param increase: additive increase per second while calls queue, as a share of the rate at the last cut.
    :param quiet_seconds: this long without a 429 and the lane stops pacing.
    :param probe_base: the first pause between probes of a lane that is down, seconds.
    :param probe_cap: the longest pause between probes, seconds.
    :param retry_after_cap: the longest pause a ``Retry-After`` gets, seconds.
    :param urgent_head_start: how much longer an urgent call counts as having waited, seconds.
    :param burst_seconds: the calls a lane may send at once after an idle spell, in seconds of its rate.
    """

    ceiling: float | None = None
    initial_rate: float = 10.0
    floor: float = 0.2
    decrease: float = 0.7
    increase: float = 0.05
    quiet_seconds: float = 30.0
    probe_base: float = 0.5
    probe_cap: float = PROBE_CAP
    retry_after_cap: float = 60.0
    urgent_head_start: float = 30.0
    burst_seconds: float = 0.1
    max_rate: float = 100_000.0


@dataclass(order=True)
class Ticket:
    """One call's place in the lane: ordered by priority (earlier goes first), then arrival."""

    priority: float
    seq: int
    since: float = field(compare=False)
    admitted_at: float | None = field(default=None, compare=False)
    probe: bool = field(default=False, compare=False)
    cancelled: bool = field(default=False, compare=False)
    queued: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Change:
    """A change of the lane's state worth one log line (never one per call)."""

    level: str
    message: str


class Pacing:
    """
    The state of one lane: its rate, tokens, queue and whether the gateway is down.

    :param rules: the constants.
    :param now: the current time (any monotonic clock, seconds).
    """

    def __init__(self, rules: PacingRules | None = None, *, now: float = 0.0) -> None:
        self.rules = rules or PacingRules()
        self.mode = OPEN
        self.rate = self._bounded(self.rules.initial_rate)
        self.tokens = self._capacity()
        self.down = False
        self.paused_until = -math.inf
        self.last_429 = -math.inf
        self.probe_failures = 0
        self._refilled = now
        self._grown = now
        self._cut_at = -math.inf
        self._cut_rate = self.rate
        self._next_probe = -math.inf
        self._probe_out: Ticket | None = None
        self._queue: list[Ticket] = []
        self._live = 0
        self._seq = itertools.count()

    # -- admission -----------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Calls queued for admission."""
        return self._live

    def request(self, now: float, *, urgent: bool = False, since: float | None = None) -> Ticket:
        """
        A call asks to go: admitted at once (``ticket.admitted_at`` set) if the lane allows it and
        nobody waits before it, else queued until :meth:`admit` lets it through.

        :param now: the current time.
        :param urgent: the call's batch is about to end: it gets a head start in the queue.
        :param since: when this call first asked (a call back from a 429 keeps its place), else ``now``.
        """
        since = now if since is None else since
        ticket = Ticket(since - (self.rules.urgent_head_start if urgent else 0.0), next(self._seq), since)
        if not self._live and self._may_go(now):
            self._take(ticket, now)
            return ticket
        ticket.queued = True
        heapq.heappush(self._queue, ticket)
        self._live += 1
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """A queued call gave up waiting (its task was cancelled)."""
        if ticket.queued and not ticket.cancelled:
            ticket.cancelled = True
            self._live -= 1

    def admit(self, now: float) -> list[Ticket]:
        """The queued calls that may go now, best first (each is then in flight)."""
        out: list[Ticket] = []
        while self._live and self._may_go(now):
            ticket = heapq.heappop(self._queue)
            if ticket.cancelled:
                continue
            ticket.queued = False
            self._live -= 1
            self._take(ticket, now)
            out.append(ticket)
        return out

    def next_admission(self, now: float) -> float | None:
        """Seconds until a queued call may go (0: now), or ``None``: none queued or a probe is out."""
        if not self._live:
            return None
        if self.down:
            if self._probe_out is not None:
                return None
            return max(0.0, self._next_probe - now, self.paused_until - now)
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate, self.paused_until - now)

    # -- outcomes ------------------------------------------------------------------------------------

    def succeeded(self, ticket: Ticket, now: float) -> Change | None:
        """The call got an answer that is not a 429 or a transient failure: the gateway is up."""
        self._settle(ticket)
        change = None
        if self.down:
            down_for = self.probe_failures
            self.down, self.probe_failures, self._next_probe = False, 0, -math.inf
            change = Change("info", f"the gateway answers again after {down_for} failed probe(s); resuming")
        return change or self._maybe_quiet(now)

    def rate_limited(self, ticket: Ticket, now: float, retry_after: float | None = None) -> Change | None:
        """The call was answered 429 (with the server's ``Retry-After`` in seconds, if any)."""
        self._settle(ticket)
        self.last_429 = now
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + min(retry_after, self.rules.retry_after_cap))
        if self.down:  # a 429 is an answer: the gateway is up again
            self.down, self.probe_failures, self._next_probe = False, 0, -math.inf
        admitted = ticket.admitted_at if ticket.admitted_at is not None else now
        if admitted < self._cut_at:
            return None  # sent at the rate before the last cut: that cut already answered it
        was = self.mode
        factor = 0.5 if was == OPEN else self.rules.decrease  # slow start overshoots by up to 2x
        self.rate = self._bounded(self.rate * factor)
        self.tokens = min(self.tokens, self._capacity())
        self.mode, self._cut_at, self._cut_rate, self._grown = PACED, now, self.rate, now
        if was == OPEN:
            why = f"Retry-After {retry_after:g} s" if retry_after else "429 Too Many Requests"
            return Change("warning", f"pacing at {self.rate:.3g} req/s ({why})")
        return None

    def failed(self, ticket: Ticket, now: float) -> Change | None:
        """The call failed transiently (5xx, 408, network error or timeout)."""
        self._settle(ticket)
        if not self.down:
            self.down, self.probe_failures = True, 1
            self._next_probe = now + self.rules.probe_base
            return Change("warning", "the gateway failed; probing it with one call at a time")
        if ticket.probe:
            self.probe_failures += 1
            pause = min(self.rules.probe_cap, self.rules.probe_base * 2 ** min(self.probe_failures - 1, 32))
            self._next_probe = now + pause
        return None

    def abandoned(self, ticket: Ticket) -> None:
        """An admitted call ended without an answer to report (its task was cancelled)."""
        self._settle(ticket)

    def failed_waiters(self) -> list[Ticket]:
        """
        The calls queued now, taken out of the queue: a failed probe counts as a failed try of each of
        them (they ask again, keeping their place, if their retry budget allows).
        """
        out = [t for t in self._queue if not t.cancelled]
        self._queue.clear()
        self._live = 0
        for ticket in out:
            ticket.queued = False
        return out

    # -- internals -----------------------------------------------------------------------------------

    def _may_go(self, now: float) -> bool:
        if now < self.paused_until:
            return False
        if self.down:
            return self._probe_out is None and now >= self._next_probe
        self._grow(now)
        self._refill(now)
        return self.tokens >= 1.0

    def _take(self, ticket: Ticket, now: float) -> None:
        ticket.admitted_at = now
        if self.down:
            ticket.probe, self._probe_out = True, ticket
        else:
            self.tokens -= 1.0

    def _settle(self, ticket: Ticket) -> None:
        if self._probe_out is ticket:
            self._probe_out = None

    def _refill(self, now: float) -> None:
        if now > self._refilled:
            self.tokens = min(self._capacity(), self.tokens + (now - self._refilled) * self.rate)
            self._refilled = now

    def _grow(self, now: float) -> None:
        """Raise the rate for the time since the last growth, if calls were queued all that time."""
        elapsed, self._grown = now - self._grown, now
        if not self._live or elapsed <= 0:
            return
        self._refill(now)
        if self.mode == OPEN:
            self.rate = self._bounded(self.rate * 2 ** min(elapsed, 64.0))
        else:
            quiet = max(0.0, now - self.last_429)
            doublings = min(quiet / (self.rules.quiet_seconds / 3), 32.0)
            slope = max(self.rules.floor, self._cut_rate * self.rules.increase) * 2**doublings
            self.rate = self._bounded(self.rate + slope * elapsed)

    def _maybe_quiet(self, now: float) -> Change | None:
        if self.mode == PACED and now - self.last_429 >= self.rules.quiet_seconds:
            self.mode = OPEN
            return Change(
                "info", f"no 429 for {self.rules.quiet_seconds:g} s; pacing ends at {self.rate:.3g} req/s"
            )
        return None

    def _capacity(self) -> float:
        return max(1.0, self.rate * self.rules.burst_seconds)

    def _bounded(self, rate: float) -> float:
        top = self.rules.ceiling if self.rules.ceiling is not None else self.rules.max_rate
        return min(max(rate, self.rules.floor), top)
