"""A multipart/form-data upload, parsed as it streams in: the file part goes straight to disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

MAX_FIELD_BYTES = 64 * 1024


class UploadError(ValueError):
    """The body is not the multipart form the API expects; the message says why."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    sha256: str = ""


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def receive_upload(request: Request, dest: Path, file_field: str = "file") -> Upload:
    """Stream the body of ``request`` into ``dest`` (the ``file_field`` part) and collect the other fields.

    :raises UploadError: when the body is not multipart, is malformed, or has no usable file part.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", "").encode().decode("latin-1"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError("Expected a multipart/form-data body.")
    upload = Upload()
    hasher = hashlib.sha256()
    headers: dict[str, bytes] = {}
    header_name, header_value = bytearray(), bytearray()
    out: IO[bytes] | None = None
    part: dict[str, object] = {}  # the part being read: its field name and whether it is the file
    value = bytearray()
    seen_file = False

    def on_part_begin() -> None:
        headers.clear()
        part.clear()
        value.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[header_name.decode("latin-1").lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal out, seen_file
        _, disposition = parse_options_header(headers.get("content-disposition", b"").decode("latin-1"))
        name = _decode(disposition.get(b"name", b""))
        part["name"] = name
        if name == file_field and not seen_file:
            seen_file = True
            filename = disposition.get(b"filename")
            # "blob" is what browsers send for a part without a name: the API reads it as no filename.
            if filename is None or not filename.strip() or filename == b"blob":
                raise UploadError(
                    f"The '{file_field}' part needs a non-blank filename other than 'blob'.", file_field
                )
            upload.filename = _decode(filename)
            upload.content_type = _decode(headers.get("content-type", b"")).strip() or None
            part["file"] = True
            out = open(dest, "wb")  # noqa: SIM115

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("file"):
            assert out is not None
            chunk = data[start:end]
            out.write(chunk)
            hasher.update(chunk)
            upload.size += len(chunk)
        else:
            value.extend(data[start:end])
            if len(value) > MAX_FIELD_BYTES:
                raise UploadError(f"The form field '{part.get('name')}' is too long.", str(part.get("name")))

    def on_part_end() -> None:
        name = part.get("name")
        if not part.get("file") and isinstance(name, str) and name not in upload.fields:
            upload.fields[name] = _decode(bytes(value))

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise UploadError(f"Malformed multipart body: {exc}") from exc
    except ClientDisconnect as exc:
        raise UploadError("The client went away during the upload.") from exc
    finally:
        if out is not None:
            out.close()
    if not seen_file:
        raise UploadError(f"Missing required parameter: '{file_field}'.", file_field)
    upload.sha256 = hasher.hexdigest()
    return upload
