"""A tiny client of the emulator's admin API (standard library only), usable from any process."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

API_PATH = "/api/v1/llm"

# Admin calls go straight to the emulator, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmulatorAdminError(RuntimeError):
    """The admin API refused a call."""


class EmulatorAdmin:
    """Drive a running emulator: faults, latency, rate limit, call counts, clock.

    :param base_url: the emulator's base URL, e.g. ``http://127.0.0.1:8000`` (without ``/api/v1/llm``).
    :param timeout: seconds to wait for each admin call.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    @property
    def api_url(self) -> str:
        return self.base_url + API_PATH

    def _call(self, method: str, path: str, body: object = None, query: dict[str, str] | None = None) -> Any:
        url = f"{self.base_url}/_emulator{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise EmulatorAdminError(f"{method} {url} answered {exc.code}: {detail}") from None

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def add_fault(
        self,
        method: str = "GET",
        path: str = "/api/v1/llm/batches/*",
        kind: str = "status",
        status: int = 503,
        count: int = 2,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
        body: Any = None,
        content_type: str | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        """Make the next ``count`` API calls matching ``method`` and the ``path`` glob fail.

        :param method: HTTP method, or ``"*"`` for any.
        :param path: an fnmatch glob on the request path, e.g. ``/api/v1/llm/batches/*``.
        :param kind: ``status`` (answer ``status`` with ``body``), ``stall`` (wait ``seconds``, then answer
            normally), ``drop`` (do the work, then close the connection before answering) or ``truncate``
            (do the work, send the headers and half the body, then close the connection).
        :param status: the status code of a ``status`` fault. Default bodies: 429 ``{"error": "Rate limit
            exceeded"}``, 502 and 504 an HTML proxy page, others ``{"error": {"message", "type", "code"}}``.
        :param retry_after: value of a ``Retry-After`` header (seconds or an HTTP date).
        :param retry_after_ms: value of a ``retry-after-ms`` header.
        :param body: the body to send instead of the default (str/bytes as is, anything else as JSON).
        :param content_type: the Content-Type of ``body``.
        :param seconds: how long a ``stall`` waits.
        :return: the fault as the emulator recorded it.
        """
        spec = {
            "method": method,
            "path": path,
            "kind": kind,
            "status": status,
            "count": count,
            "retry_after": retry_after,
            "retry_after_ms": retry_after_ms,
            "body": body.decode() if isinstance(body, bytes) else body,
            "content_type": content_type,
            "seconds": seconds,
        }
        result: dict[str, Any] = self._call("POST", "/faults", spec)["fault"]
        return result

    def faults(self) -> list[dict[str, Any]]:
        """The faults still pending, with their remaining counts."""
        result: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def calls(self, method: str | None = None, path: str | None = None, status: int | None = None) -> int:
        """
        How many API calls matched ``method`` (None: any) and the ``path`` glob (None: any); with
        ``status``, only those answered with that status (e.g. 429: rate limited or faulted).
        """
        query = {
            k: str(v) for k, v in (("method", method), ("path", path), ("status", status)) if v is not None
        }
        return int(self._call("GET", "/calls", query=query)["count"])

    def reset_calls(self) -> None:
        self._call("DELETE", "/calls")

    def set_latency(self, seconds: float) -> None:
        """Add ``seconds`` to every API call from now on (0 to stop)."""
        self._call("PUT", "/latency", {"seconds": seconds})

    def set_rate_limit(self, per_second: float | None) -> None:
        """Allow ``per_second`` API calls per second per API key (None: no limit)."""
        self._call("PUT", "/rate_limit", {"per_second": per_second})

    def now(self) -> float:
        """The emulator clock, in Unix seconds."""
        return float(self._call("GET", "/clock")["now"])

    def advance_clock(self, seconds: float) -> float:
        """Jump the emulator clock forward; returns once the batches have caught up. Returns the new time."""
        return float(self._call("POST", "/clock/advance", {"seconds": seconds})["now"])
