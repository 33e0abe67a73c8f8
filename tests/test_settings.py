"""Connection settings (settings.py), as pure functions: no server needed."""

from __future__ import annotations

import pytest

from airflow_provider_batches.exceptions import (
    MKA1InvalidInputError,
)
from airflow_provider_batches.settings import settings_from_connection


def _settings(
    host: str | None = "https://gw.example.com", port: int | None = None, password: str = "k-1", **extras
):
    return settings_from_connection("mka1_default", host=host, port=port, password=password, extras=extras)


@pytest.mark.parametrize(
    ("host", "port", "extras", "base_url"),
    [
        (None, None, {}, "https://apigw.mka1.com"),
        ("", None, {}, "https://apigw.mka1.com"),
        ("https://gw.example.com", None, {}, "https://gw.example.com"),
        ("https://gw.example.com/", 8443, {}, "https://gw.example.com:8443"),
        ("HTTP://127.0.0.1:8000", None, {}, "http://127.0.0.1:8000"),
        ("127.0.0.1", 8000, {}, "http://127.0.0.1:8000"),
        ("localhost", 8000, {}, "http://localhost:8000"),
        ("::1", None, {}, "http://[::1]"),
        ("gw.example.com", None, {}, "https://gw.example.com"),
        ("gw.example.com", 8080, {"scheme": "http"}, "http://gw.example.com:8080"),
        ("127.0.0.1", 8443, {"scheme": "https"}, "https://127.0.0.1:8443"),
    ],
)
def test_host_rules(host: str | None, port: int | None, extras: dict, base_url: str) -> None:
    assert _settings(host, port, **extras).base_url == base_url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"password": ""}, "connection 'mka1_default': no API key: set its password"),
        ({"password": "  "}, "no API key"),
        ({"host": "ftp://gw.example.com"}, "scheme 'ftp'"),
        ({"host": "https://user:pw@gw.example.com"}, "must not contain credentials"),
        ({"host": "https://gw.example.com/api/v1/llm"}, "without a path"),
        ({"host": "https://gw.example.com?x=1"}, "without a path"),
        ({"host": "https://gw.example.com:99999"}, "not a valid URL"),
        ({"host": "https://gw example.com"}, "no valid host name"),
        ({"timeout": "soon"}, "extra timeout must be a positive number"),
        ({"timeout": 0}, "extra timeout must be a positive number"),
        ({"timeout": True}, "extra timeout"),
        ({"max_retries": -1}, "extra max_retries must be 0 or more"),
        ({"max_retries": "many"}, "extra max_retries must be a whole number"),
        ({"max_retries": 1.5}, "extra max_retries must be a whole number"),
        ({"verify": "maybe"}, "extra verify must be true, false or the path of a CA bundle"),
        ({"verify": 3}, "extra verify"),
        ({"scheme": "ftp"}, "extra scheme"),
        ({"base_path": "/a/../b"}, "base_path"),
        ({"on_behalf_of": "u\r\nx"}, "on_behalf_of"),
    ],
)
def test_bad_connection_fields_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(MKA1InvalidInputError) as info:
        _settings(**kwargs)
    assert message in str(info.value)
    assert "mka1_default" in str(info.value)


def test_extras_as_strings_and_airflow2_prefix(tmp_path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    settings = _settings(
        timeout="2.5",
        max_retries="3",
        verify="false",
        extra__mka1__on_behalf_of="user-7",
        extra__mka1__base_path="/v2",
    )
    assert (settings.timeout, settings.retry.max_retries, settings.verify) == (2.5, 3, False)
    assert (settings.on_behalf_of, settings.base_path) == ("user-7", "/v2")
    assert settings.connect_timeout == 2.5
    assert _settings(verify=str(bundle)).verify == str(bundle)
    assert _settings(verify=True, timeout=None).timeout == 60.0


def test_settings_never_show_the_key() -> None:
    settings = _settings(password="sk-very-secret")
    assert "sk-very-secret" not in repr(settings)
    assert settings.headers["Authorization"] == "Bearer sk-very-secret"
    assert settings.headers["User-Agent"].startswith("airflow-provider-batches/")
    assert "X-On-Behalf-Of" not in settings.headers
    assert _settings(on_behalf_of="user-1").headers["X-On-Behalf-Of"] == "user-1"
    with pytest.raises(MKA1InvalidInputError) as info:
        _settings(password="sk-very\nsecret")
    assert "very" not in str(info.value)


def test_insecure_only_for_plain_http_to_another_machine() -> None:
    assert _settings("http://gw.example.com").insecure
    assert not _settings("http://127.0.0.1:8000").insecure
    assert not _settings("https://gw.example.com").insecure


def test_every_extra_read_is_declared_in_the_form() -> None:
    """The extras settings_from_connection reads are exactly the connection form's fields."""
    import re
    from pathlib import Path

    from airflow_provider_batches import settings
    from airflow_provider_batches.get_provider_info import CONN_FIELDS

    read = set(re.findall(r'_extra\(extras, "(\w+)"\)', Path(settings.__file__).read_text()))
    assert read == set(CONN_FIELDS)
