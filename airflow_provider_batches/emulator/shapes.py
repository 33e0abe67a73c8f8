"""What the vendor SDK (``meetkai-mka1``) fixes about the answers: error bodies, content types, concurrency.

Holds no routes and no state; ``app`` builds its answers with these.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from airflow_provider_batches.emulator.settings import EmulatorSettings

API_PREFIX = "/api/v1/llm"
# The content types the vendor SDK accepts for file content (it raises on any other, even on a 200).
CONTENT_TYPES = frozenset(
    {
        "text/plain", "text/csv", "text/html", "text/css", "text/javascript", "text/markdown", "text/xml",
        "text/x-python", "application/json", "application/x-ndjson", "application/jsonl", "application/xml",
        "application/javascript", "application/pdf", "image/png", "image/jpeg", "image/jpg", "image/gif",
        "image/webp", "image/tiff", "image/svg+xml", "application/rtf", "application/msword",
        "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    }
)  # fmt: skip
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class APIError(Exception):
    """An error answer in the API's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


# The vendor SDK types this route's 400, 401, 404 and 500 bodies with an integer ``code`` (the status);
# the other routes' errors carry a string code.
_CONTENT_PATH = re.compile(rf"^{API_PREFIX}/files/[^/]*/content$")


def error_response(
    request: Request,
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    kind: str = "invalid_request_error",
) -> JSONResponse:
    wire_code: str | int | None = status if _CONTENT_PATH.match(request.url.path) else code
    error = {"message": message, "type": kind, "param": param, "code": wire_code}
    return JSONResponse({"error": error}, status_code=status)


def content_type(filename: str, uploaded: str | None) -> str:
    """The type the file's content is served with: always one of :data:`CONTENT_TYPES`."""
    name = filename.lower()
    if name.endswith(".jsonl"):
        return "application/jsonl"
    if name.endswith(".ndjson"):
        return "application/x-ndjson"
    declared = (uploaded or "").split(";", 1)[0].strip().lower()
    if declared in CONTENT_TYPES:
        return declared
    guessed = mimetypes.guess_type(name, strict=False)[0]
    return guessed if guessed in CONTENT_TYPES else "text/plain"


def max_concurrency(value: Any, settings: EmulatorSettings) -> int:
    """The batch's ``max_concurrency``: the default when absent, refused above the ceiling."""
    if value is None:
        return settings.default_line_concurrency
    ceiling = settings.max_line_concurrency
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= ceiling:
        raise APIError(
            400,
            f"Invalid 'max_concurrency': expected an integer from 1 to {ceiling}.",
            "invalid_value",
            "max_concurrency",
        )
    return value
