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
        # The port field as Airflow 3.3's form needs it for Test: the scheme's default is left out.
        ("https://apigw.mka1.com", 443, {}, "https://apigw.mka1.com"),
        ("https://apigw.mka1.com:443", None, {}, "https://apigw.mka1.com"),
        ("http://127.0.0.1:8765", 8765, {}, "http://127.0.0.1:8765"),
        ("http://127.0.0.1:8765", 0, {}, "http://127.0.0.1:8765"),  # Airflow's Test sends 0 for none
    ],
)
def test_host_rules(host: str | None, port: int | None, extras: dict, base_url: str) -> None:
    assert _settings(host, port, **extras).base_url == base_url


@pytest.mark.parametrize(
    "host",
    [
        "ftp://u:SECRET-KEY-1@x.com",  # a wrong scheme
        "http//u:SECRET-KEY-1@x.com",  # a scheme slip
        "https://u:SECRET-KEY-1@x.com:99999",  # a bad port
        "https://u:SECRET-KEY-1@x.com/api",  # a path
        "https://SECRET-KEY-1@x.com",  # the key as the user name
        "https://u:SECRET-KEY-1@x .com",  # a space
    ],
)
def test_a_key_typed_into_the_host_is_in_no_message(host: str) -> None:
    with pytest.raises(MKA1InvalidInputError, match="must not contain credentials") as raised:
        _settings(host, None)
    assert "SECRET-KEY-1" not in str(raised.value)


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
        ({"host": "https://gw_ex!.com"}, "no valid host name"),
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
        ({"max_requests_per_second": 0}, "extra max_requests_per_second must be a positive number"),
        ({"max_requests_per_second": "fast"}, "extra max_requests_per_second"),
        ({"max_requests_per_second": True}, "extra max_requests_per_second"),
    ],
)
def test_bad_connection_fields_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(MKA1InvalidInputError) as info:
        _settings(**kwargs)
    assert message in str(info.value)
    assert "mka1_default" in str(info.value)


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        (
            "http//host:8765",
            "host 'http//host:8765' needs '://' after 'http': did you mean 'http://host:8765'?",
        ),
        ("https//apigw.mka1.com", "did you mean 'https://apigw.mka1.com'?"),
        ("https:/apigw.mka1.com", "needs '://' after 'https': did you mean 'https://apigw.mka1.com'?"),
        ("http:///127.0.0.1:8765", "did you mean 'http://127.0.0.1:8765'?"),
        ("https://https://apigw.mka1.com", "names the scheme twice: did you mean 'https://apigw.mka1.com'?"),
        ("https://http//host:8765", "names the scheme twice: did you mean 'http://host:8765'?"),
        ("https://apigw. mka1.com", "has a space in it: did you mean 'https://apigw.mka1.com'?"),
        ("https:\\\\apigw.mka1.com", "has a backslash: did you mean 'https://apigw.mka1.com'?"),
        ("apigw.mka1.com/api/v1/llm", "host 'apigw.mka1.com/api/v1/llm' must be a base URL"),
    ],
)
def test_usual_slips_in_the_host_are_named_with_the_url_meant(typed: str, said: str) -> None:
    with pytest.raises(MKA1InvalidInputError) as info:
        _settings(typed)
    assert said in str(info.value)
    assert "https://http" not in str(info.value).replace(typed, "")  # no URL the user never typed


def test_a_port_field_that_disagrees_with_the_host_is_refused() -> None:
    with pytest.raises(MKA1InvalidInputError, match="has port 8765 but the port field says 8766"):
        _settings("http://127.0.0.1:8765", 8766)


def test_ca_bundle_has_its_own_extra_and_the_old_verify_path_still_works(tmp_path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    assert _settings(ca_bundle=str(bundle)).verify == str(bundle)
    assert _settings(ca_bundle=str(bundle), verify=True).verify == str(bundle)
    assert _settings(verify=str(bundle)).verify == str(bundle)
    with pytest.raises(MKA1InvalidInputError, match="extra ca_bundle must be the path of a CA bundle file"):
        _settings(ca_bundle=str(tmp_path / "missing.pem"))
    with pytest.raises(MKA1InvalidInputError, match="verify is false but ca_bundle is set"):
        _settings(ca_bundle=str(bundle), verify=False)


def test_messages_for_airflows_test_name_no_connection_id() -> None:
    """Airflow's Test runs on a copy under a random id: the user's messages never show it."""
    with pytest.raises(MKA1InvalidInputError) as info:
        settings_from_connection("1ATwy1gM", host="http//h", port=None, password="k", extras={}, named=False)
    assert str(info.value).startswith("MKA1 connection: host 'http//h' needs '://'")
    assert "1ATwy1gM" not in str(info.value)


def test_the_masked_key_airflow_30_sends_is_named_as_such() -> None:
    with pytest.raises(MKA1InvalidInputError, match="'\\*\\*\\*', Airflow's mask, not the key"):
        _settings(password="***")


def test_where_always_shows_the_port() -> None:
    assert _settings("https://apigw.mka1.com").where == "apigw.mka1.com:443"
    assert _settings("http://127.0.0.1:8765").where == "127.0.0.1:8765"
    assert _settings("::1", 8000).where == "[::1]:8000"


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


def test_max_requests_per_second_is_the_lanes_ceiling() -> None:
    assert _settings().max_requests_per_second is None
    assert _settings(max_requests_per_second="2.5").max_requests_per_second == 2.5
