"""
Check MKA1 connections as tasks will use them, before a DAG runs: mka1_default, the same
in the URI form, a Base URL with a typing slip, a wrong API key. Each check is one
GET /batches?limit=1, as Test in the UI and `airflow connections test` make.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote, urlsplit

from airflow_provider_batches.hooks.mka1 import MKA1Hook


def check(conn_id: str) -> tuple[bool, str]:
    ok, message = MKA1Hook(mka1_conn_id=conn_id).test_connection()
    print(f"{conn_id}: {'ok' if ok else 'FAILED'}: {message}")
    return ok, message


if __name__ == "__main__":
    ok, message = check("mka1_default")
    assert ok, message
    assert message.startswith("Connected to the MKA1 API at ")

    # The connection's fields, read and checked once.
    settings = MKA1Hook().settings
    host, port = urlsplit(settings.base_url).hostname, urlsplit(settings.base_url).port

    # The URI form: the key URL-encoded, extras as query parameters. A host without a
    # scheme is https, or http when it is this machine.
    key = quote(settings.api_key, safe="")
    os.environ["AIRFLOW_CONN_MKA1_URI"] = f"mka1://:{key}@{host}:{port}?timeout=120"
    assert check("mka1_uri")[0]
    assert MKA1Hook(mka1_conn_id="mka1_uri").settings.timeout == 120

    # A slip in the Base URL: refused before anything is sent, with the URL meant.
    slip = {"conn_type": "mka1", "host": f"http//{host}:{port}", "password": "any-key"}
    os.environ["AIRFLOW_CONN_MKA1_SLIP"] = json.dumps(slip)
    ok, message = check("mka1_slip")
    assert not ok and f"did you mean 'http://{host}:{port}'?" in message, message

    # A wrong key: the API's answer, with its status and request id.
    wrong = {"conn_type": "mka1", "host": settings.base_url, "password": "not-the-key"}
    os.environ["AIRFLOW_CONN_MKA1_WRONG_KEY"] = json.dumps(wrong)
    ok, message = check("mka1_wrong_key")
    assert not ok and "answered 401 Unauthorized" in message, message
