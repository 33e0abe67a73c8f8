"""
How a failed connection is told to a person: the root cause of a requests, urllib3, aiohttp, ssl or socket
error, in a few words ("could not connect to 127.0.0.1:8766: connection refused"). Pure: it never opens a
connection and imports none of those libraries (it reads the exception chain and the class names).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Iterator

_CONNECT_PHASE = frozenset(
    {
        "NewConnectionError",  # urllib3: refused, unreachable, DNS (NameResolutionError)
        "ConnectTimeoutError",  # urllib3
        "ConnectTimeout",  # requests
        "ClientConnectorError",  # aiohttp: refused, DNS, TLS handshake
        "ConnectionTimeoutError",  # aiohttp >= 3.10: sock_connect
    }
)
_READ_TIMEOUT = frozenset({"ReadTimeoutError", "ReadTimeout", "SocketTimeoutError"})
_CLOSED = frozenset({"RemoteDisconnected", "ServerDisconnectedError"})
_BROKEN_BODY = frozenset({"IncompleteRead", "ProtocolError", "ChunkedEncodingError", "ClientPayloadError"})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps, outermost first (cause, context and the libraries' links)."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__]
        linked += [getattr(current, name, None) for name in ("reason", "os_error", "certificate_error")]
        linked += list(current.args[:1])
        pending.extend(link for link in linked if isinstance(link, BaseException))


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def root_cause(exc: BaseException) -> str:
    """The deepest cause a person can act on, in words: ``"connection refused"``, ``"name or service not
    known"``, ``"TLS certificate verify failed: self-signed certificate"``, ``"timed out"``."""
    chain = list(_chain(exc))
    for cause in reversed(chain):  # aiohttp's certificate error is one too, without the details
        if isinstance(cause, ssl.SSLCertVerificationError) and getattr(cause, "verify_message", None):
            return f"TLS certificate verify failed: {cause.verify_message}"
    for cause in reversed(chain):
        if isinstance(cause, ssl.SSLError):
            return (
                f"TLS error: {_lower_first(str(getattr(cause, 'reason', None) or cause.strerror or cause))}"
            )
    for cause in reversed(chain):
        if isinstance(cause, socket.gaierror):
            return _lower_first(str(cause.strerror or "the host name could not be resolved"))
        if isinstance(cause, TimeoutError) or _names(cause) & (_READ_TIMEOUT | {"ConnectTimeoutError"}):
            return "timed out"
        if isinstance(cause, OSError) and cause.errno and cause.errno in errno.errorcode:
            return _lower_first(os.strerror(cause.errno))
    for cause in chain:
        if _names(cause) & _CLOSED:
            return "the server closed the connection without answering"
        if _names(cause) & _BROKEN_BODY:
            return "the connection broke off in the middle of the answer"
    innermost = chain[-1]
    detail = " ".join(str(innermost).split())[:120]
    return f"{type(innermost).__name__}: {detail}" if detail else type(innermost).__name__


def describe_network_error(exc: BaseException, where: str, read_timeout: float | None = None) -> str:
    """
    The failure as a person would say it, the root cause first after what failed.

    :param exc: what requests or aiohttp raised.
    :param where: ``host:port`` the call went to.
    :param read_timeout: the read timeout in seconds, named when the answer did not come in time.
    :return: e.g. ``"could not connect to 127.0.0.1:8766: connection refused"``, ``"no answer from
        apigw.mka1.com:443 within 60 s (the read timeout)"``, ``"lost the connection to ...: ..."``.
    """
    chain = list(_chain(exc))
    names = set().union(*(_names(link) for link in chain))
    cause = root_cause(exc)
    # Refused, unresolved or a failed TLS handshake: the request never reached the server.
    never_connected = (ssl.SSLError, socket.gaierror, ConnectionRefusedError)
    if names & _CONNECT_PHASE or any(isinstance(link, never_connected) for link in chain):
        return f"could not connect to {where}: {cause}"
    if names & _READ_TIMEOUT or isinstance(exc, TimeoutError):
        within = f" within {read_timeout:g} s (the read timeout)" if read_timeout else " in time"
        return f"no answer from {where}{within}"
    return f"lost the connection to {where}: {cause}"
