"""
The settings of a connection: :class:`ClientSettings`, read and checked once from an Airflow connection
(every error names the field to fix). Pure: it never opens a connection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_batches.constants import (
    CONNECTION_TYPE,
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    USER_AGENT,
)
from airflow_provider_batches.exceptions import MKA1InvalidInputError
from airflow_provider_batches.retry import RetryPolicy
from airflow_provider_batches.validation import shown, validate_base_path, validate_on_behalf_of

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    name = hostname.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClientSettings:
    """
    Everything a transport needs to talk to the API, read and checked once from an Airflow connection.

    :param conn_id: the Airflow connection id (for messages).
    :param base_url: ``scheme://host[:port]``, without a path.
    :param base_path: path prefix of the API, e.g. ``/api/v1/llm``.
    :param api_key: the API key; never shown in ``repr``.
    :param on_behalf_of: end-user id for ``X-On-Behalf-Of``, or ``None``.
    :param timeout: read timeout of one try, in seconds.
    :param connect_timeout: connect timeout of one try, in seconds.
    :param verify: verify TLS certificates (``True``), don't (``False``), or the path of a CA bundle.
    :param retry: the retry rule.
    :param max_requests_per_second: the most calls a second the async lane of this connection makes, or
        ``None`` (it paces itself to the key's limit from the 429s).
    """

    conn_id: str
    base_url: str
    base_path: str
    api_key: str = field(repr=False)
    on_behalf_of: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    verify: bool | str = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_requests_per_second: float | None = None

    def url(self, path: str) -> str:
        """The full URL of ``path`` (from :func:`~airflow_provider_batches.validation.api_path`)."""
        return f"{self.base_url}{self.base_path}{path}"

    @property
    def headers(self) -> dict[str, str]:
        """The headers of every request. They hold the API key: never log them."""
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": USER_AGENT,
        }
        if self.on_behalf_of:
            headers["X-On-Behalf-Of"] = self.on_behalf_of
        return headers

    @property
    def where(self) -> str:
        """``host:port`` of the API, the port always shown (for messages about the network)."""
        parts = urlsplit(self.base_url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        return f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    @property
    def insecure(self) -> bool:
        """Whether the key would travel in clear text to another machine (``http://`` not to loopback)."""
        parts = urlsplit(self.base_url)
        return parts.scheme == "http" and not is_loopback(parts.hostname or "")


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    # Airflow 2's connection form stores custom fields as extra__<conn_type>__<name>.
    value = extras.get(name)
    if value is None or value == "":
        value = extras.get(f"extra__{CONNECTION_TYPE}__{name}")
    return None if value == "" else value


def _bad(conn_id: str | None, what: str) -> MKA1InvalidInputError:
    return MKA1InvalidInputError(
        f"MKA1 connection {conn_id!r}: {what}" if conn_id else f"MKA1 connection: {what}"
    )


def _positive(conn_id: str | None, name: str, value: Any, what: str) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise _bad(conn_id, f"extra {name} must be {what}, got {shown(value)}.")
    return number


def _positive_number(conn_id: str | None, name: str, value: Any, default: float) -> float:
    number = _positive(conn_id, name, value, "a positive number of seconds")
    return default if number is None else number


def _rate(conn_id: str | None, value: Any) -> float | None:
    return _positive(conn_id, "max_requests_per_second", value, "a positive number")


def _retries(conn_id: str | None, value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_RETRIES
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(conn_id, f"extra max_retries must be a whole number, got {shown(value)}.") from None
    if number < 0:
        raise _bad(conn_id, f"extra max_retries must be 0 or more, got {number}.")
    return number


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _verify(conn_id: str | None, value: Any, ca_bundle: Any) -> bool | str:
    if ca_bundle is not None:
        if not isinstance(ca_bundle, str) or not os.path.isfile(ca_bundle):
            raise _bad(
                conn_id, f"extra ca_bundle must be the path of a CA bundle file, got {shown(ca_bundle)}."
            )
        if value is False or (isinstance(value, str) and value.strip().lower() in _FALSE):
            raise _bad(
                conn_id, "extra verify is false but ca_bundle is set: turn verify on, or clear ca_bundle."
            )
        return ca_bundle
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
        if os.path.isfile(value):  # the older form of ca_bundle
            return value
    raise _bad(
        conn_id, f"extra verify must be true, false or the path of a CA bundle file, got {shown(value)}."
    )


_SCHEME_SLIP = re.compile(r"(?i)(https?)(:?/+|:\\+|:(?!/))(.*)")
_DOUBLED_SCHEME = re.compile(r"(?i)https?://+(https?)(?::/*|/+)(.*)")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_slip(typed: str) -> str | None:
    """What is wrong with a Base URL typed with a usual slip, and the URL meant; ``None`` if none is seen."""
    if any(ch.isspace() for ch in typed):
        return f"has a space in it: did you mean {''.join(typed.split())!r}?"
    if "\\" in typed:
        return f"has a backslash: did you mean {typed.replace(chr(92), '/')!r}?"
    if doubled := _DOUBLED_SCHEME.fullmatch(typed):
        return f"names the scheme twice: did you mean {doubled[1].lower() + '://' + doubled[2]!r}?"
    slip = _SCHEME_SLIP.fullmatch(typed)
    if slip and slip[2] != "://":
        meant = slip[1].lower() + "://" + slip[3].lstrip("/")
        return f"needs '://' after {slip[1]!r}: did you mean {meant!r}?"
    return None


def _base_url(conn_id: str | None, host: str | None, port: int | None, scheme: Any) -> str:
    typed = (host or "").strip()
    raw = typed or DEFAULT_BASE_URL
    if scheme is not None and str(scheme).lower() not in ("http", "https"):
        raise _bad(conn_id, f"extra scheme must be 'http' or 'https', got {shown(scheme)}.")
    # First, and without echoing the host: a key typed into it must not reach any message below.
    if "@" in raw:  # no host name or base URL has one; user:password@ does
        raise _bad(conn_id, "host must not contain credentials: put the API key in the password.")
    if slip := _host_slip(raw):
        raise _bad(conn_id, f"host {shown(typed)} {slip}")
    if "://" not in raw:
        # The URI form (mka1://:KEY@host:port) yields a host without a scheme.
        with contextlib.suppress(ValueError):
            raw = f"[{raw}]" if ipaddress.ip_address(raw).version == 6 else raw
        hostname = urlsplit(f"//{raw}").hostname or ""
        default = "http" if is_loopback(hostname) else "https"
        raw = f"{str(scheme).lower() if scheme else default}://{raw}"
    # Messages show what was typed, never the URL with a scheme the user did not write.
    try:
        parts = urlsplit(raw)
        parsed_port = parts.port
    except ValueError as exc:
        raise _bad(conn_id, f"host {shown(typed)} is not a valid URL ({exc}).") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad(conn_id, f"host {shown(typed)} has scheme {parts.scheme!r}; use https:// (or http://).")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _bad(
            conn_id,
            f"host {shown(typed)} must be a base URL such as {DEFAULT_BASE_URL}, without a path: "
            "put a path prefix in the extra base_path.",
        )
    hostname = parts.hostname or ""
    try:
        is_ipv6 = ipaddress.ip_address(hostname).version == 6
    except ValueError:
        is_ipv6 = False
        if not _HOSTNAME.fullmatch(hostname):
            raise _bad(conn_id, f"host {shown(typed)} has no valid host name.") from None
    if port:  # 0, as Airflow's Test sends for no port, is none
        if parsed_port is not None and parsed_port != int(port):
            raise _bad(
                conn_id,
                f"host {shown(typed)} has port {parsed_port} but the port field says {port}: "
                "make them agree, or clear the port field.",
            )
        parsed_port = int(port)
    scheme_name = parts.scheme.lower()
    netloc = f"[{hostname}]" if is_ipv6 else hostname
    if parsed_port is not None and parsed_port != _DEFAULT_PORTS[scheme_name]:
        netloc += f":{parsed_port}"
    return f"{scheme_name}://{netloc}"


def settings_from_connection(
    conn_id: str,
    *,
    host: str | None,
    port: int | None,
    password: str | None,
    extras: Mapping[str, Any],
    on_behalf_of: str | None = None,
    timeout: float | None = None,
    retry_policy: RetryPolicy | None = None,
    named: bool = True,
) -> ClientSettings:
    """
    Read and check the fields of an Airflow connection; every error names the field to fix.

    Host rules: empty means ``https://apigw.mka1.com``. A host without a scheme (as the URI form
    ``mka1://:KEY@127.0.0.1:8000`` gives) gets the extra ``scheme`` if set, else ``http`` for a loopback
    host and ``https`` for any other. The connection's port applies when the host has none, and must agree
    with the host's when both are set (0 is none); the scheme's default port is left out of the URL. A path
    in the host is refused: the API's path prefix is the extra ``base_path``. The usual slips (``http//``,
    ``https:/``, a doubled scheme, a space, a backslash) are named with the URL meant; every message shows
    the host as typed.

    Extras (plain or in Airflow 2's ``extra__mka1__<name>`` form): ``on_behalf_of``, ``timeout`` (read
    timeout, seconds), ``max_retries``, ``base_path``, ``verify`` (bool, or the older form of
    ``ca_bundle``), ``ca_bundle`` (path of a CA bundle file), ``scheme``, ``backoff_base`` (first retry
    backoff ceiling in seconds, default 0.5), ``max_requests_per_second``
    (a ceiling on the pace of the async lane).

    :param conn_id: the connection id, for messages.
    :param host: the connection's host.
    :param port: the connection's port.
    :param password: the API key.
    :param extras: the connection's extra, deserialised.
    :param on_behalf_of: overrides the extra ``on_behalf_of`` when not ``None``.
    :param timeout: overrides the extra ``timeout`` when not ``None``.
    :param retry_policy: overrides the retry rule built from ``max_retries`` and ``backoff_base``.
    :param named: name ``conn_id`` in error messages; ``False`` for Airflow's Test, which runs on a copy of
        the connection under a random id that would only confuse.
    """
    name = conn_id if named else None
    api_key = (password or "").strip()
    if not api_key:
        raise _bad(name, "no API key: set its password.")
    if api_key == "***":
        # Airflow 3.0's Test button sends the key as the connection list shows it, masked.
        raise _bad(
            name,
            "the API key is '***', Airflow's mask, not the key: Airflow 3.0's Test sends the masked key. "
            "Test with `airflow connections test <conn_id>` instead.",
        )
    if not all(" " < ch <= "~" for ch in api_key):
        # Not shown: it is the secret.
        raise _bad(name, "the API key (password) has characters that cannot be sent in a header.")
    read_timeout = _positive_number(
        name, "timeout", timeout if timeout is not None else _extra(extras, "timeout"), DEFAULT_TIMEOUT
    )
    if retry_policy is None:
        retry_policy = RetryPolicy(
            max_retries=_retries(name, _extra(extras, "max_retries")),
            backoff_base=_positive_number(
                name, "backoff_base", _extra(extras, "backoff_base"), DEFAULT_BACKOFF_BASE
            ),
        )
    try:
        base_path = validate_base_path(_extra(extras, "base_path"))
        user = validate_on_behalf_of(
            on_behalf_of if on_behalf_of is not None else _extra(extras, "on_behalf_of")
        )
    except MKA1InvalidInputError as exc:
        raise _bad(name, str(exc)) from None
    return ClientSettings(
        conn_id=conn_id,
        base_url=_base_url(name, host, port, _extra(extras, "scheme")),
        base_path=base_path,
        api_key=api_key,
        on_behalf_of=user,
        timeout=read_timeout,
        connect_timeout=min(DEFAULT_CONNECT_TIMEOUT, read_timeout),
        verify=_verify(name, _extra(extras, "verify"), _extra(extras, "ca_bundle")),
        retry=retry_policy,
        max_requests_per_second=_rate(conn_id, _extra(extras, "max_requests_per_second")),
    )


def explicit_settings(
    host: str | None,
    api_key: str,
    *,
    on_behalf_of: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    backoff_base: float | None = None,
    base_path: str | None = None,
    verify: bool | str | None = None,
    ca_bundle: str | None = None,
    scheme: str | None = None,
    retry_policy: RetryPolicy | None = None,
    label: str = "explicit settings",
) -> ClientSettings:
    """
    :class:`ClientSettings` from values given in code rather than an Airflow connection, checked by the
    same rules as :func:`settings_from_connection` (each argument is the connection field or extra of
    the same name; ``None`` takes its default).

    :param host: the base URL (``None`` or empty: the MKA1 gateway).
    :param api_key: the API key.
    :param label: what messages call these settings, in place of a connection id.
    """
    extras = {
        "on_behalf_of": on_behalf_of,
        "max_retries": max_retries,
        "backoff_base": backoff_base,
        "base_path": base_path,
        "verify": verify,
        "ca_bundle": ca_bundle,
        "scheme": scheme,
    }
    return settings_from_connection(
        label,
        host=host,
        port=None,
        password=api_key,
        extras={name: value for name, value in extras.items() if value is not None},
        timeout=timeout,
        retry_policy=retry_policy,
    )
