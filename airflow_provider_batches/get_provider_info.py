"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_provider_batches import __version__

# The one definition of the connection form: Airflow 3.2+ reads it from here without importing the hook;
# the hook's get_connection_form_widgets / get_ui_field_behaviour build 2.11-3.1's form from the same data.
CONNECTION_TYPE = "mka1"
DEFAULT_CONN_ID = "mka1_default"
DEFAULT_BASE_URL = "https://apigw.mka1.com"
DEFAULT_BASE_PATH = "/api/v1/llm"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "on_behalf_of": {
        "label": "On behalf of (end-user id)",
        "description": "Sent as X-On-Behalf-Of: files and batches then belong to that end user.",
        "schema": {"type": ["string", "null"]},
    },
    "base_path": {
        "label": "Base path",
        "description": "Path prefix of the Batch API under the host.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_BASE_PATH},
    },
    "timeout": {
        "label": "Read timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_TIMEOUT, "minimum": 1},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of a transient failure (429, 5xx, network) per call.",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_MAX_RETRIES, "minimum": 0},
    },
    "verify": {
        "label": "Verify TLS certificates",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login", "extra"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "mka1-..."},
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-batches",
        "name": "MKA1 Batch API",
        "description": "Hooks, operators, sensors and triggers for the MKA1 LLM gateway's Batch API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "MKA1 Batch API",
                "external-doc-url": "https://docs.mka1.com",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "MKA1 Batch API",
                "python-modules": ["airflow_provider_batches.hooks.mka1"],
            }
        ],
        "operators": [
            {
                "integration-name": "MKA1 Batch API",
                "python-modules": ["airflow_provider_batches.operators.mka1"],
            }
        ],
        "sensors": [
            {
                "integration-name": "MKA1 Batch API",
                "python-modules": ["airflow_provider_batches.sensors.mka1"],
            }
        ],
        "triggers": [
            {
                "integration-name": "MKA1 Batch API",
                "python-modules": ["airflow_provider_batches.triggers.mka1"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_batches.hooks.mka1.MKA1Hook",
                "hook-name": "MKA1",
                "connection-type": CONNECTION_TYPE,
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
