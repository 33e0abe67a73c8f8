"""
Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``), and the
one definition of the connection form; it imports only the constants, so reading it costs nothing.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_batches import __version__
from airflow_provider_batches.constants import (
    CONNECTION_TYPE,
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BASE_PATH,
    DEFAULT_BASE_URL,
    DEFAULT_CONN_ID,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
)

__all__ = ["CONNECTION_TYPE", "CONN_FIELDS", "DEFAULT_CONN_ID", "UI_FIELD_BEHAVIOUR", "get_provider_info"]

# Every connection extra, declared once: Airflow 3.2+ reads the form from here without importing the hook;
# the hook's get_connection_form_widgets / get_ui_field_behaviour build 2.11-3.1's form from the same data,
# and settings.settings_from_connection reads exactly these names.

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
    "backoff_base": {
        "label": "Retry backoff base (seconds)",
        "description": "First ceiling of the exponential backoff between retries, doubled per retry.",
        "schema": {"type": ["number", "null"], "default": DEFAULT_BACKOFF_BASE, "exclusiveMinimum": 0},
    },
    "verify": {
        "label": "Verify TLS certificates",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "scheme": {
        "label": "Scheme",
        "description": "http or https, for a host given without one (default: http for this machine, "
        "https otherwise).",
        "schema": {"type": ["string", "null"], "enum": ["http", "https", None]},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login", "extra"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "mka1-..."},
}


def connection_form_widgets() -> dict[str, Any]:
    """The extra fields of Airflow 2.11-3.1's connection form (wtforms), built from ``CONN_FIELDS``."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from wtforms import IntegerField, StringField
    from wtforms.validators import NumberRange, Optional

    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        schema = spec["schema"]
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        options = {"description": spec.get("description", ""), "default": schema.get("default")}
        if "boolean" in kinds:
            # Text, not a checkbox: an unticked box saves nothing (so "false" could never be set),
            # and verify also takes the path of a CA bundle.
            options["description"] = options["description"] or "true, false or the path of a CA bundle"
            widgets[name] = StringField(spec["label"], widget=BS3TextFieldWidget(), **options)
        elif "integer" in kinds:
            validators = [Optional(), NumberRange(min=schema.get("minimum"))]
            widgets[name] = IntegerField(
                spec["label"], validators=validators, widget=BS3TextFieldWidget(), **options
            )
        else:
            widgets[name] = StringField(spec["label"], widget=BS3TextFieldWidget(), **options)
    return widgets


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
