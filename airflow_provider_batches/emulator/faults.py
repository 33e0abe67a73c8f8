"""What the emulator does around each call: request ids, call counts, latency, faults, the rate limit.

:class:`EmulatorMiddleware` is plain ASGI and wraps the whole FastAPI app, so that faults also hit
requests that FastAPI would answer itself (unknown routes, validation errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

ADMIN_PREFIX = "/_emulator"
FAULT_KINDS = ("status", "stall", "drop", "truncate")

_HTML = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def default_body(status: int) -> tuple[bytes, str]:
    """What a status fault answers when no body is given: what the gateway or its proxy would send."""
    if status == 429:
        return b'{"error":"Rate limit exceeded"}', "application/json"
    if status in (502, 504):
        return _HTML.format(status=status, phrase=_phrase(status)).encode(), "text/html"
    error = {
        "message": _phrase(status),
        "type": "server_error" if status >= 500 else "invalid_request_error",
        "code": None,
    }
    return json.dumps({"error": error}).encode(), "application/json"


@dataclass
class Fault:
    """The next ``count`` calls matching ``method`` and the ``path`` glob get this fault."""

    kind: str = "status"
    method: str = "*"
    path: str = "*"
    count: int = 1
    status: int = 503
    retry_after: float | str | None = None
    retry_after_ms: float | None = None
    body: Any = None
    content_type: str | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise ValueError("count must be a positive integer")
        if self.kind == "status" and not (isinstance(self.status, int) and 100 <= self.status <= 599):
            raise ValueError("status must be an HTTP status code")
        if self.kind == "stall" and not (isinstance(self.seconds, int | float) and self.seconds >= 0):
            raise ValueError("a stall needs seconds >= 0")
        self.method = (self.method or "*").upper()
        self.path = self.path or "*"

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and fnmatchcase(path, self.path)

    def response(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if self.body is None:
            body, content_type = default_body(self.status)
        elif isinstance(self.body, str | bytes):
            body = self.body.encode() if isinstance(self.body, str) else self.body
            content_type = "text/plain"
        else:
            body, content_type = json.dumps(self.body).encode(), "application/json"
        headers = [(b"content-type", (self.content_type or content_type).encode())]
        if self.retry_after is not None:
            value = self.retry_after
            text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            headers.append((b"retry-after", text.encode()))
        if self.retry_after_ms is not None:
            headers.append((b"retry-after-ms", f"{self.retry_after_ms:g}".encode()))
        return self.status, headers, body


class Control:
    """The run-time knobs the admin API turns."""

    def __init__(self, latency: float = 0.0, rate_limit: float | None = None) -> None:
        self.faults: list[Fault] = []
        self.calls: Counter[tuple[str, str]] = Counter()
        # The status of every answer sent (a dropped call has none), for callers that count 429s.
        self.answers: Counter[tuple[str, str, int]] = Counter()
        self.latency = latency
        self.rate_limit = rate_limit
        self._buckets: dict[str, tuple[float, float]] = {}

    def add_fault(self, **spec: Any) -> Fault:
        fault = Fault(**spec)
        self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def fault_list(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.faults]

    def count_calls(
        self, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> int:
        """Calls matching ``method`` and the ``path`` glob; with ``status``, only those answered with it."""
        method = method.upper() if method and method != "*" else None

        def match(m: str, p: str) -> bool:
            return (method is None or m == method) and (path is None or fnmatchcase(p, path))

        if status is not None:
            return sum(n for (m, p, s), n in self.answers.items() if s == status and match(m, p))
        return sum(n for (m, p), n in self.calls.items() if match(m, p))

    def reset_calls(self) -> None:
        self.calls.clear()
        self.answers.clear()

    def set_rate_limit(self, per_second: float | None) -> None:
        self.rate_limit = per_second
        self._buckets.clear()

    def over_rate_limit(self, key: str) -> bool:
        """A token bucket per API key, refilled at ``rate_limit`` a second, holding one second's worth."""
        rate = self.rate_limit
        if rate is None:
            return False
        now = time.monotonic()
        capacity = max(1.0, rate)
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return True
        self._buckets[key] = (tokens - 1.0, now)
        return False


class _Cut(Exception):
    """Stops the app's response where a drop or truncate fault cuts it."""


def _api_key(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1").partition(" ")[2].strip()
    return ""


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def client_key(client: Any) -> tuple[str, int] | None:
    """The key under which the server registers a connection's transport: the peer's (host, port)."""
    if not client or len(client) < 2:
        return None
    return str(client[0]), int(client[1])


class EmulatorMiddleware:
    """ASGI middleware: every response gets an ``X-Request-ID``; API calls are counted, delayed, faulted
    and rate limited. ``transports`` maps a client's (host, port) to its connection, which the server
    registers so that a fault can really cut the connection."""

    def __init__(
        self,
        app: ASGIApp,
        control: Control,
        transports: dict[tuple[str, int], asyncio.Transport] | None = None,
    ) -> None:
        self.app = app
        self.control = control
        self.transports = {} if transports is None else transports
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"{uuid.uuid4()}#{next(self._counter)}".encode()

        method, path = scope["method"], scope["path"]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id)]}
                if not path.startswith(ADMIN_PREFIX):
                    self.control.answers[(method, path, message["status"])] += 1
            await send(message)

        if path.startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send_with_id)
            return
        control = self.control
        control.calls[(method, path)] += 1
        if control.latency > 0:
            await asyncio.sleep(control.latency)
        fault = control.take_fault(method, path)
        if fault is not None and fault.kind == "stall":
            await asyncio.sleep(fault.seconds or 0.0)
            fault = None
        if fault is not None and fault.kind == "status":
            await _answer(send_with_id, *fault.response())
            return
        if control.over_rate_limit(_api_key(scope)):
            await _answer(
                send_with_id,
                429,
                [(b"content-type", b"application/json")],
                b'{"error":"Rate limit exceeded"}',
            )
            return
        if fault is not None:
            await self._cut(scope, receive, send_with_id, fault.kind)
            return
        await self.app(scope, receive, send_with_id)

    async def _cut(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        """Let the app do its work, then close the connection: before any byte of the answer ("drop") or
        halfway through the body, after headers that promise all of it ("truncate")."""
        sent = 0
        limit: int | None = None

        async def cut_send(message: Message) -> None:
            nonlocal sent, limit
            if message["type"] == "http.response.start":
                if kind == "drop":
                    raise _Cut
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-length":
                        limit = int(value) // 2
                await send(message)
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if limit is None:
                    limit = len(body) // 2
                piece = body[: max(0, limit - sent)]
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    sent += len(piece)
                if sent >= limit or not message.get("more_body", False):
                    raise _Cut

        with contextlib.suppress(_Cut):
            await self.app(scope, receive, cut_send)
        key = client_key(scope.get("client"))
        transport = self.transports.get(key) if key is not None else None
        if key is None or transport is None:
            raise RuntimeError("emulator fault: connection cut")  # the server closes it
        if kind == "drop":
            transport.abort()
        else:
            transport.close()  # flushes the bytes already written, then closes
        # Return only once the server has seen the connection go, so that it does not try to answer.
        for _ in range(200):
            if self.transports.get(key) is not transport:
                break
            await asyncio.sleep(0.005)
