"""
The hook guide: what each error of the provider means, raised for real against the API.

Run it with the ``mka1_default`` connection set (``AIRFLOW_CONN_MKA1_DEFAULT``); it
writes only in a temporary directory, and asserts the class and the facts of every
error.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_batches.exceptions import (
    MKA1AuthenticationError,
    MKA1BatchOutcomeError,
    MKA1BatchPartialFailureError,
    MKA1ConnectionError,
    MKA1Error,
    MKA1InvalidInputError,
    MKA1NotFoundError,
    is_transient,
)
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.outcome import check_batch_outcome


def main(workdir: Path) -> None:
    hook = MKA1Hook()
    # the connection's host, for the hooks built below
    base_url = hook.settings.base_url

    # --8<-- [start:input]
    try:
        hook.get_batch("../files/x")  # a templated id gone wrong: refused, never sent
    except MKA1InvalidInputError as exc:
        assert isinstance(exc, ValueError) and not is_transient(exc)
        assert str(exc).startswith("Invalid batch id '../files/x'")
    # --8<-- [end:input]
    else:
        raise AssertionError("not refused")

    # --8<-- [start:api]
    try:
        hook.get_batch("batch_does_not_exist")
    except MKA1NotFoundError as exc:
        assert (exc.status_code, exc.method, exc.path) == (
            404,
            "GET",
            "/batches/batch_does_not_exist",
        )
        assert exc.request_id  # the X-Request-ID to give MKA1 support
        assert not is_transient(exc)
        assert str(exc).startswith(
            "MKA1 API GET /batches/batch_does_not_exist answered 404 Not Found: "
        )
    # --8<-- [end:api]
    else:
        raise AssertionError("no 404")

    # --8<-- [start:auth]
    # checked as a connection's would be
    wrong_key = MKA1Hook.from_credentials(base_url, "not-the-key")
    try:
        wrong_key.get_batch("batch_x")
    except MKA1AuthenticationError as exc:
        # never the key
        assert exc.status_code in (401, 403) and "not-the-key" not in str(exc)
    # --8<-- [end:auth]
    else:
        raise AssertionError("no 401")

    # --8<-- [start:network]
    nothing_there = MKA1Hook.from_credentials(
        "http://127.0.0.1:9", "key", max_retries=1, backoff_base=0.1
    )
    try:
        # retried once, then raised with the root cause
        nothing_there.get_batch("batch_x")
    except MKA1ConnectionError as exc:
        assert is_transient(exc)
        assert (exc.method, exc.path) == ("GET", "/batches/batch_x")
        assert str(exc) == (
            "MKA1 API GET /batches/batch_x: "
            "could not connect to 127.0.0.1:9: connection refused"
        )
    # --8<-- [end:network]
    else:
        raise AssertionError("connected to port 9")

    # --8<-- [start:outcome]
    requests = workdir / "requests.jsonl"
    with requests.open("w", encoding="utf-8") as f:
        for n in range(4):
            body = {
                "model": "mka1-small",
                "messages": [{"role": "user", "content": f"question {n}"}],
            }
            # the emulator fails this line (never send "emulator_fail" to the real API)
            if n == 0:
                body["emulator_fail"] = {"code": "content_filter", "message": "blocked"}
            f.write(
                json.dumps(
                    {
                        "custom_id": f"q-{n}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
            )
            f.write("\n")
    batch = hook.submit_batch("/v1/chat/completions", input_path=requests)
    while not batch.is_terminal:
        time.sleep(1)
        batch = hook.get_batch(batch.id)
    assert check_batch_outcome(batch, max_failed_ratio=0.25)  # 1 of 4 failed: allowed
    try:
        check_batch_outcome(batch)  # max_failed_ratio=0.0
    except MKA1BatchPartialFailureError as exc:
        assert isinstance(exc, MKA1BatchOutcomeError)
        assert isinstance(exc, AirflowFailException)  # Airflow does not retry the task
        assert exc.batch.id == batch.id and exc.batch.request_counts.failed == 1
    # --8<-- [end:outcome]
    else:
        raise AssertionError("the failed line passed")

    assert all(
        issubclass(cls, MKA1Error)
        for cls in (MKA1InvalidInputError, MKA1ConnectionError)
    )
    assert issubclass(MKA1Error, AirflowException)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
