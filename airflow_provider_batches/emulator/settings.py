"""Settings of one emulator server."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EmulatorSettings:
    """How one emulator behaves. Durations are seconds of the emulator clock.

    :param api_keys: the accepted ``Bearer`` keys.
    :param data_dir: where files and batches are kept; a temporary directory (removed on stop) when None.
    :param host: interface to listen on.
    :param port: port to listen on; 0 picks a free one.
    :param validation_seconds: how long a batch stays ``validating``.
    :param lines_per_second: how fast an ``in_progress`` batch works through its lines.
    :param finalizing_seconds: how long a batch stays ``finalizing`` (and ``cancelling``).
    :param completion_window_seconds: the real length of the ``24h`` window (expires_at - created_at).
    :param time_scale: how many times faster than real time the emulator clock runs.
    :param latency: seconds added to every API call (not to the admin endpoints).
    :param rate_limit: requests per second allowed per API key; None for no limit.
    :param default_line_concurrency: the ``max_concurrency`` of a batch created without one (the gateway's
        ``BATCH_DEFAULT_LINE_CONCURRENCY``; its real value is not published).
    :param max_line_concurrency: the highest ``max_concurrency`` a create accepts (the gateway's
        ``BATCH_MAX_LINE_CONCURRENCY``); above it the create is refused with a 400.
    """

    api_keys: tuple[str, ...] = ("test-key",)
    data_dir: str | os.PathLike[str] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    validation_seconds: float = 1.0
    lines_per_second: float = 20.0
    finalizing_seconds: float = 1.0
    completion_window_seconds: float = 86400.0
    time_scale: float = 1.0
    latency: float = 0.0
    rate_limit: float | None = None
    default_line_concurrency: int = 8
    max_line_concurrency: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_keys", tuple(self.api_keys))
        if not self.api_keys or not all(isinstance(k, str) and k for k in self.api_keys):
            raise ValueError("api_keys must hold at least one non-empty string")
        for name in ("validation_seconds", "finalizing_seconds", "latency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("lines_per_second", "completion_window_seconds", "time_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 or None")
        if not 1 <= self.default_line_concurrency <= self.max_line_concurrency:
            raise ValueError("need 1 <= default_line_concurrency <= max_line_concurrency")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in 0..65535")
