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
    MAX_HEADER_VALUE_LENGTH,
)

__all__ = ["CONNECTION_TYPE", "CONN_FIELDS", "DEFAULT_CONN_ID", "UI_FIELD_BEHAVIOUR", "get_provider_info"]

# Every connection extra, declared once: Airflow 3.2+ reads the form from here without importing the hook;
# the hook's get_connection_form_widgets / get_ui_field_behaviour build 2.11-3.1's form from the same data,
# and settings.settings_from_connection reads exactly these names.

# What X-On-Behalf-Of may carry (validation.validate_header_value): printable ASCII, no spaces at either end.
ON_BEHALF_OF_PATTERN = r"^[!-~]([ -~]*[!-~])?$"

CONN_FIELDS: dict[str, dict[str, Any]] = {
    "on_behalf_of": {
        "label": "On behalf of (end-user id)",
        "description": "Sent as X-On-Behalf-Of: files and batches then belong to that end user. Printable "
        f"ASCII, no spaces at either end, at most {MAX_HEADER_VALUE_LENGTH} characters; empty for none.",
        "schema": {
            "type": ["string", "null"],
            "pattern": ON_BEHALF_OF_PATTERN,
            "maxLength": MAX_HEADER_VALUE_LENGTH,
        },
    },
    "base_path": {
        "label": "Base path",
        "description": f"Path prefix of the Batch API under the host (default {DEFAULT_BASE_PATH}).",
        "schema": {"type": ["string", "null"], "default": DEFAULT_BASE_PATH},
    },
    "timeout": {
        "label": "Read timeout (seconds)",
        "description": "How long one request may wait for the API's answer before it is retried "
        f"(default {DEFAULT_TIMEOUT:g}). Connecting has its own limit of 10 seconds.",
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
    "max_requests_per_second": {
        "label": "Max requests per second",
        "description": "A ceiling on the calls a second of all the deferred waits on this connection in one "
        "triggerer. Without it, they pace themselves to the key's rate limit from its 429 answers.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "verify": {
        "label": "Verify TLS certificates",
        "description": "Turn off only for a test server with a self-signed certificate; for a private "
        "certificate authority set CA bundle instead.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "scheme": {
        "label": "Scheme",
        "description": "http or https, for a host given without one (default: http for this machine, "
        "https otherwise).",
        "schema": {"type": ["string", "null"], "enum": ["http", "https", None]},
    },
    "ca_bundle": {
        "label": "CA bundle (path)",
        "description": "Path of a PEM file of CA certificates that verifies the API's certificate instead "
        "of the system's; it must exist on every worker and triggerer.",
        "schema": {"type": ["string", "null"]},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    # Port stays visible: Airflow 3.3.0-3.3.2 refuse Test for a connection stored without one
    # (docs/pages/installation.md, "Test a connection").
    "hidden-fields": ["schema", "login", "extra"],
    "relabeling": {"host": "Base URL", "password": "API key", "port": "Port"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "mka1-...", "port": "443"},
}


def connection_form_widgets() -> dict[str, Any]:
    """The extra fields of Airflow 2.11-3.1's connection form (wtforms), built from ``CONN_FIELDS``."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from wtforms import IntegerField, StringField
    from wtforms.validators import Length, NumberRange, Optional, Regexp

    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        schema = spec["schema"]
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        options = {"description": spec.get("description", ""), "default": schema.get("default")}
        if "pattern" in schema:
            # Airflow 2's form refuses the value on save, with the field's help text as the reason.
            message = options["description"]
            options["validators"] = [
                Optional(),
                Length(max=schema["maxLength"], message=message),
                Regexp(schema["pattern"], message=message),
            ]
        if "boolean" in kinds:
            # Text, not a checkbox: an unticked box saves nothing, so "false" could never be set.
            options["description"] += " true or false."
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
    """
    The provider's metadata for Airflow's providers manager (entry point ``apache_airflow_provider``): the
    package name and version, the modules of the hook, operators, sensor and trigger, the
    ``@task.mka1_batch`` decorator, and the ``mka1`` connection type with its form fields.
    """
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
                "python-modules": [
                    "airflow_provider_batches.operators.mka1",
                    "airflow_provider_batches.operators.mka1_job",
                ],
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
                "python-modules": [
                    "airflow_provider_batches.triggers.mka1",
                    "airflow_provider_batches.triggers.mka1_job",
                ],
            }
        ],
        "task-decorators": [
            {
                "name": "mka1_batch",
                "class-name": "airflow_provider_batches.decorators.mka1_batch.mka1_batch_task",
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
