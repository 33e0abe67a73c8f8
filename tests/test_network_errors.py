"""Network failures said as a person would, from what requests and aiohttp really raise on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import requests

from airflow_provider_batches.network_errors import describe_network_error, root_cause


def _serve(handle: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None) -> int:
    """A loopback server that hands each accepted connection to ``handle``; its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            try:
                handle(tls.wrap_socket(conn, server_side=True) if tls else conn)
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return int(listener.getsockname()[1])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@pytest.fixture(scope="module")
def servers(self_signed) -> Iterator[dict[str, str]]:
    held: list[socket.socket] = []
    silent = _serve(held.append)  # accepts, never answers
    hangs_up = _serve(lambda conn: conn.close())  # closes before any answer
    tls = _serve(lambda conn: conn.close(), tls=self_signed)
    yield {
        "refused": f"http://127.0.0.1:{_closed_port()}/",
        "unknown host": "http://no-such-host.invalid/",
        "silent": f"http://127.0.0.1:{silent}/",
        "hangs up": f"http://127.0.0.1:{hangs_up}/",
        "self-signed": f"https://127.0.0.1:{tls}/",
    }
    for conn in held:
        conn.close()


EXPECTED = {
    "refused": "could not connect to {where}: connection refused",
    "unknown host": "could not connect to {where}: name or service not known",
    "silent": "no answer from {where} within 0.5 s (the read timeout)",
    "hangs up": "lost the connection to {where}: ",
    "self-signed": "could not connect to {where}: TLS certificate verify failed: self-signed certificate",
}


def _where(url: str) -> str:
    return url.split("/")[2]


@pytest.mark.parametrize("case", list(EXPECTED))
def test_requests_errors_read_as_a_person_would_say_them(servers, case: str) -> None:
    url = servers[case]
    with pytest.raises(requests.RequestException) as raised:
        requests.get(url, timeout=(5, 0.5))
    said = describe_network_error(raised.value, _where(url), read_timeout=0.5)
    assert said.startswith(EXPECTED[case].format(where=_where(url))), said
    assert "HTTPConnectionPool" not in said and "Max retries" not in said


@pytest.mark.parametrize("case", list(EXPECTED))
async def test_aiohttp_errors_read_the_same(servers, case: str) -> None:
    url = servers[case]
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=0.5)
    async with aiohttp.ClientSession() as session:
        with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)) as raised:
            async with session.get(url, timeout=timeout) as answer:
                await answer.read()
    said = describe_network_error(raised.value, _where(url), read_timeout=0.5)
    expected = EXPECTED[case].format(where=_where(url))
    if case == "hangs up":  # aiohttp reports a peer that hangs up before answering as a failed connect
        assert said.startswith((expected, f"could not connect to {_where(url)}: ")), said
    else:
        assert said.startswith(expected), said


def test_an_unknown_error_keeps_its_class_and_a_short_text() -> None:
    assert root_cause(RuntimeError("something odd " * 30)).startswith("RuntimeError: something odd")
    assert len(root_cause(RuntimeError("x" * 1000))) < 150
    assert root_cause(RuntimeError()) == "RuntimeError"
