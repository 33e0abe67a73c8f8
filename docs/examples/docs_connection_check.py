"""
Check MKA1 connections as tasks will use them, before a DAG runs: ``mka1_default``, the same in the URI
form, a Base URL with a typing slip, and a wrong API key. Each check is one ``GET /batches?limit=1``.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote, urlsplit

from airflow_provider_batches.hooks.mka1 import MKA1Hook


def check(conn_id: str) -> tuple[bool, str]:
    """What Test in the UI and `airflow connections test` report for ``conn_id``."""
    ok, message = MKA1Hook(mka1_conn_id=conn_id).test_connection()
    print(f"{conn_id}: {'ok' if ok else 'FAILED'}: {message}")  # noqa: T201
    return ok, message


if __name__ == "__main__":
    # --8<-- [start:default]
    ok, message = check("mka1_default")
    assert ok, message
    assert message.startswith("Connected to the MKA1 API at ")
    # --8<-- [end:default]

    settings = MKA1Hook().settings  # the connection's fields, read and checked once
    where = urlsplit(settings.base_url)

    # --8<-- [start:uri]
    # The URI form: the key URL-encoded; a host without a scheme is https, or http on this machine.
    uri = f"mka1://:{quote(settings.api_key, safe='')}@{where.hostname}:{where.port}?timeout=120"
    os.environ["AIRFLOW_CONN_MKA1_URI"] = uri
    assert check("mka1_uri")[0]
    assert MKA1Hook(mka1_conn_id="mka1_uri").settings.timeout == 120
    # --8<-- [end:uri]

    # --8<-- [start:slip]
    typed = f"http//{where.hostname}:{where.port}"  # the ':' missing
    os.environ["AIRFLOW_CONN_MKA1_SLIP"] = json.dumps(
        {"conn_type": "mka1", "host": typed, "password": "any-key"}
    )
    ok, message = check("mka1_slip")
    assert not ok and f"did you mean 'http://{where.hostname}:{where.port}'?" in message, message
    # --8<-- [end:slip]

    # --8<-- [start:wrong_key]
    wrong = {"conn_type": "mka1", "host": settings.base_url, "password": "not-the-key"}
    os.environ["AIRFLOW_CONN_MKA1_WRONG_KEY"] = json.dumps(wrong)
    ok, message = check("mka1_wrong_key")
    assert not ok and "answered 401 Unauthorized" in message, message
    # --8<-- [end:wrong_key]
