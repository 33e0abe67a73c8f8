"""
The hook's two transports, :mod:`.sync` (``requests``, for tasks) and :mod:`.aio` (``aiohttp``, for
triggers), and the log lines both write; nothing here decides a rule (those are in the modules below).
"""

from __future__ import annotations

import time
from typing import Any

from airflow_provider_batches.retry import Attempt, RetryBudget


def log_call(
    log: Any, method: str, path: str, status: int | str, request_id: str | None, started: float
) -> None:
    """Log one try at debug level: call, status (or the exception's name), request id, duration."""
    elapsed_ms = (time.monotonic() - started) * 1000
    log.debug(
        "MKA1 %s %s -> %s (request id %s, %.0f ms)", method, path, status, request_id or "-", elapsed_ms
    )


def next_delay(log: Any, budget: RetryBudget, attempt: Attempt) -> float | None:
    """The budget's wait before retrying ``attempt`` (logged as a warning), or ``None``: give up."""
    delay = budget.next_delay(attempt)
    if delay is not None:
        log.warning(
            "%s; retry %d of %d in %.2f s.", attempt.error, budget.retries, budget.policy.max_retries, delay
        )
    return delay
