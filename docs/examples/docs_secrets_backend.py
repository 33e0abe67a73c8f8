"""
An MKA1 connection from a secrets backend: Airflow's local-filesystem backend, set
through [secrets] backend and backend_kwargs as any other is (Vault, AWS Secrets
Manager, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

if __name__ == "__main__":
    # Where mka1_default points: the emulator in the docs' tests, for you the gateway.
    default = json.loads(os.environ["AIRFLOW_CONN_MKA1_DEFAULT"])

    connection = {
        "conn_type": "mka1",
        "host": default["host"],  # e.g. https://apigw.mka1.com
        "password": default["password"],  # the API key
        "extra": {"timeout": 120, "max_retries": 5},
    }
    connections = Path("connections.json").absolute()
    connections.write_text(json.dumps({"mka1_from_secrets": connection}))

    # Set before Airflow is imported, on every worker and triggerer (here: this script).
    backend = "airflow.secrets.local_filesystem.LocalFilesystemBackend"
    os.environ["AIRFLOW__SECRETS__BACKEND"] = backend
    kwargs = {"connections_file_path": str(connections)}
    os.environ["AIRFLOW__SECRETS__BACKEND_KWARGS"] = json.dumps(kwargs)

    from airflow_provider_batches.hooks.mka1 import MKA1Hook

    hook = MKA1Hook(mka1_conn_id="mka1_from_secrets")
    ok, message = hook.test_connection()
    assert ok, message
    assert hook.settings.timeout == 120
