"""
Every default and fixed name of the provider, defined once; this module imports nothing of ours.

The connection form (:mod:`~airflow_provider_batches.get_provider_info`), the settings, the retry rule,
the poller, the trigger, the sensor and the operators all read their defaults from here.
"""

from __future__ import annotations

from airflow_provider_batches import __version__

CONNECTION_TYPE = "mka1"
DEFAULT_CONN_ID = "mka1_default"

# Connection settings.
DEFAULT_BASE_URL = "https://apigw.mka1.com"
DEFAULT_BASE_PATH = "/api/v1/llm"
DEFAULT_TIMEOUT = 60.0
"""Read timeout of one try, in seconds."""
DEFAULT_CONNECT_TIMEOUT = 10.0
"""Connect timeout of one try, in seconds (never more than the read timeout)."""
USER_AGENT = f"airflow-provider-batches/{__version__}"
REQUEST_ID_HEADER = "X-Request-ID"
MAX_HEADER_VALUE_LENGTH = 256
"""The longest header value sent (``X-On-Behalf-Of``); the connection form declares the same."""

# The retry rule of one call.
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_CAP = 30.0
DEFAULT_RETRY_AFTER_CAP = 60.0
DEFAULT_TOTAL_TIMEOUT = 600.0
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth trying again (with network errors and timeouts, which have no status)."""

# Waiting on a batch.
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_MAX_POLL_INTERVAL = 300.0
DEFAULT_ERROR_BUDGET = 10
POLL_JITTER = 0.1
HEARTBEAT_SECONDS = 240.0
"""A wait logs a progress line at least this often, even if nothing moved ("still validating after 4 min")."""

# Batches and files.
DEFAULT_ENDPOINT = "/v1/chat/completions"
DEFAULT_COMPLETION_WINDOW = "24h"
IDEMPOTENCY_METADATA_KEY = "airflow_idempotency_key"
INPUT_FINGERPRINT_METADATA_KEY = "airflow_input_fingerprint"
"""Metadata key of what a batch was made from: a SHA-256 of its input's content, or ``file:<id>``."""
ON_INPUT_CHANGE = ("cancel_and_resubmit", "fail")
"""What to do with an earlier try's batch made from another input: cancel it and submit anew, or fail."""
REATTACH_MAX_AGE = 25 * 3600
"""How far back ``find_batch`` looks for a batch with the idempotency key, in seconds."""
REATTACH_MAX_PAGES = 10
"""How many pages of 100 batches ``find_batch`` reads at most."""
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
CHUNK_SIZE = 1024 * 1024
"""Bytes per chunk of an upload or a download."""
ERROR_BODY_LIMIT = 64 * 1024
"""The most bytes of an error answer read to find its message."""
