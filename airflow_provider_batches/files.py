"""
The files side of a transfer: a streamed multipart upload body, where a source or a destination is
(local or object storage), sinks that put a download in place atomically, and the upload, download and
result-line reading built on them. It never opens a socket: the transport it is given does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from airflow_provider_batches.constants import CHUNK_SIZE
from airflow_provider_batches.exceptions import MKA1InvalidInputError, MKA1InvalidResponseError
from airflow_provider_batches.models import DownloadResult, FileObject, ResultLine
from airflow_provider_batches.responses import describe_validation_error
from airflow_provider_batches.validation import api_path, validate_filename, validate_purpose

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_batches.transport.sync import SyncTransport


class MultipartFile:
    """
    A ``multipart/form-data`` body of one form field and one file, streamed from the file in chunks.

    It has a length (so requests sends ``Content-Length``, not chunked encoding) and can be iterated
    again, re-opening the file, so that a retried upload sends the whole body again.
    """

    def __init__(self, opener: Callable[[], IO[bytes]], size: int, filename: str, fields: dict[str, str]):
        self.boundary = uuid.uuid4().hex
        self.size = size
        self._opener = opener
        # As browsers do: a quote would end the parameter, a backslash may be read as an escape.
        quoted = filename.replace("\\", "%5C").replace('"', "%22")
        head = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        )
        self._head = head.encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        """The body's ``Content-Type`` header: ``multipart/form-data`` with its boundary."""
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        sent = 0
        with self._opener() as source:
            while sent < self.size:
                chunk = source.read(min(CHUNK_SIZE, self.size - sent))
                if not chunk:
                    break
                sent += len(chunk)
                yield chunk
        if sent != self.size:
            raise MKA1InvalidInputError(
                f"The file shrank while it was uploaded ({sent} of {self.size} bytes)."
            )
        yield self._tail


def resolve(value: object) -> tuple[Path, None] | tuple[None, ObjectStoragePath]:
    """
    ``(local path, None)`` or ``(None, object storage path)``. A ``file://`` ObjectStoragePath is a local
    path; a string with a scheme (``s3://bucket/key``) is an ObjectStoragePath, never a local file named
    after the URL. (On Airflow 2 an ObjectStoragePath is also a ``pathlib.Path``: hence the pair.)
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    try:
        if isinstance(value, str) and "://" in value:
            value = ObjectStoragePath(value)
        if isinstance(value, ObjectStoragePath):
            if value.protocol in ("file", "local"):
                return Path(value.path), None
            value.fs  # noqa: B018 - an unknown scheme fails here, not half-way through a transfer
            return None, value
    except ValueError as exc:  # e.g. "No filesystem registered for scheme ..."
        raise MKA1InvalidInputError(f"Cannot use {str(value)!r}: {exc}") from None
    if isinstance(value, (str, os.PathLike)):
        return Path(value), None
    raise MKA1InvalidInputError(
        f"Expected a local path or an ObjectStoragePath, got {type(value).__name__}: {value!r}"
    )


class Sink:
    """Where a download goes: a temporary name next to the destination, moved into place on commit."""

    def write(self, chunk: bytes) -> None:
        """
        Append the next bytes of the download to the temporary file.

        :param chunk: the bytes.
        """
        raise NotImplementedError

    def commit(self) -> str:
        """
        Move the complete file into place at its destination (called once every byte is written).

        :return: where the file is now.
        """
        raise NotImplementedError

    def abort(self) -> None:
        """
        Remove the temporary file, leaving the destination as it was; called on any failure, never raises.
        """
        raise NotImplementedError


class LocalSink(Sink):
    """
    A local destination, written to ``.<name>.part`` beside it under an exclusive lock, then fsynced and
    renamed over it. The part file's name is fixed, so that the retry of a killed download takes over
    (and truncates) the one it left; the lock, which dies with its process, keeps two live downloads to the
    same destination apart.

    :param destination: the file to write; its parent directories are created.
    :raises MKA1InvalidInputError: another download to ``destination`` is in progress.
    """

    def __init__(self, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.destination = destination
        # One temporary name per destination: the retry of a killed download takes over (and truncates)
        # the part file it left, instead of leaving it behind for good. The lock, which dies with its
        # process, keeps two live downloads to the same destination from writing into each other.
        self.tmp = destination.with_name(f".{destination.name}.part")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MKA1InvalidInputError(f"Another download to {destination} is in progress.") from None
        os.ftruncate(fd, 0)
        self.file = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """
        Append the next bytes of the download to the part file.

        :param chunk: the bytes.
        """
        self.file.write(chunk)

    def commit(self) -> str:
        """
        Flush and fsync the part file, rename it over the destination (still holding the lock), then fsync the
        directory where the OS allows it, so that the rename survives a crash.

        :return: the destination's path.
        """
        self.file.flush()
        os.fsync(self.file.fileno())
        os.replace(self.tmp, self.destination)  # still holding the lock
        self.file.close()
        with contextlib.suppress(OSError):
            # The rename itself is durable only once the directory is synced (not possible on every OS).
            dir_fd = os.open(self.destination.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return str(self.destination)

    def abort(self) -> None:
        """
        Remove the part file, then close it (releasing the lock), so that another try's part file is never
        removed.
        """
        self.tmp.unlink(missing_ok=True)  # before the lock goes, so as not to remove another try's file
        with contextlib.suppress(OSError):
            self.file.close()


class ObjectStorageSink(Sink):
    """
    A destination in object storage, written to ``.<name>.<random>.part`` beside it and renamed to it on
    commit. The part file's name is new for each download (no lock is possible there).

    :param destination: the ``ObjectStoragePath`` to write.
    """

    def __init__(self, destination: ObjectStoragePath) -> None:
        self.destination = destination
        self.tmp = destination.parent / f".{destination.name}.{uuid.uuid4().hex[:12]}.part"
        self.file = self.tmp.open("wb")

    def write(self, chunk: bytes) -> None:
        """
        Append the next bytes of the download to the part file.

        :param chunk: the bytes.
        """
        self.file.write(chunk)

    def commit(self) -> str:
        """
        Close the part file and rename it to the destination.

        :return: the destination's URI.
        """
        self.file.close()
        self.tmp.rename(self.destination)
        return str(self.destination)

    def abort(self) -> None:
        """Close and remove the part file, whatever state it is in; never raises."""
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(Exception):
            self.tmp.unlink()


def open_sink(
    target: tuple[Path, None] | tuple[None, ObjectStoragePath], filename: str | None, file_id: str
) -> Sink:
    """
    The sink of a download; an existing local directory receives the file under its API ``filename``
    (made safe), else under its id.

    :param target: the destination, from :func:`resolve`.
    :param filename: the file's API ``filename``.
    :param file_id: the file's id.
    """
    local, remote = target
    if local is None:
        return ObjectStorageSink(remote)  # type: ignore[arg-type]
    if local.is_dir():
        local = local / safe_name(filename, file_id)
    return LocalSink(local)


def safe_name(filename: str | None, fallback: str) -> str:
    """
    The last component of ``filename`` (``/`` or ``\\`` separated) if it is a usable file name, else
    ``fallback``: never a path, an empty name, ``.``, ``..`` or a name with non-printable characters.

    :param filename: the file's API ``filename``; ``None`` if it has none.
    :param fallback: the name to use instead, e.g. the file's id.
    """
    name = os.path.basename((filename or "").replace("\\", "/"))
    if not name or name in (".", "..") or not name.isprintable():
        return fallback
    return name


def open_source(source: object) -> tuple[Callable[[], IO[bytes]], int, str]:
    """How to open ``source`` for reading, its size and its name."""
    local, remote = resolve(source)
    target: Any = local if local is not None else remote
    if not target.is_file():
        raise MKA1InvalidInputError(f"No file to upload at {str(target)!r}.")
    try:
        # Opened once here so that an unreadable file fails now, not inside the HTTP request.
        with target.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
    except OSError as exc:
        raise MKA1InvalidInputError(f"Cannot read {str(target)!r}: {exc}") from None
    return (lambda: target.open("rb")), int(size), target.name


def fingerprint(source: object) -> str:
    """The SHA-256 (hex) of a local or object storage file's content, read in chunks."""
    opener, _, _ = open_source(source)
    digest = hashlib.sha256()
    with opener() as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def split_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Split a stream of chunks into (1-based line number, line without its newline)."""
    number = 0
    pending: list[bytes] = []  # pieces of a line that spans chunks, joined once it ends
    for chunk in chunks:
        *complete, rest = chunk.split(b"\n")
        for line in complete:
            if pending:
                line, pending = b"".join([*pending, line]), []
            number += 1
            yield number, line
        if rest:
            pending.append(rest)
    if pending:
        yield number + 1, b"".join(pending)


def upload(transport: SyncTransport, source: object, purpose: str, filename: str | None) -> FileObject:
    """
    Upload ``source`` through ``transport``, streamed, and check the stored size (see
    :meth:`~airflow_provider_batches.hooks.mka1.MKA1Hook.upload_file`).
    """
    validate_purpose(purpose)
    opener, size, name = open_source(source)
    body = MultipartFile(opener, size, validate_filename(filename or name), {"purpose": purpose})
    path = api_path("files")
    headers = {"Content-Type": body.content_type, "Content-Length": str(len(body))}
    file = transport.get_model(FileObject, "POST", path, data=body, headers=headers)
    if file.bytes != size:
        raise MKA1InvalidResponseError(
            200, f"uploaded {size} bytes but file {file.id} has {file.bytes}", method="POST", path=path
        )
    transport.log.info("Uploaded %s (%d bytes) as file %s.", name, size, file.id)
    return file


def download(transport: SyncTransport, file: FileObject, sink: Sink) -> DownloadResult:
    """
    Stream ``file``'s content through ``transport`` into ``sink``, committed only once complete and of
    the file's size; aborted (nothing left behind) on any failure.
    """
    path = api_path("files", file.id, "content")
    size = newlines = 0
    last = b"\n"
    try:
        for chunk in transport.iter_content(path):
            sink.write(chunk)
            size += len(chunk)
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
        if size != file.bytes:
            raise MKA1InvalidResponseError(
                200,
                f"downloaded {size} bytes of file {file.id} but the API says it has {file.bytes}",
                method="GET",
                path=path,
            )
        where = sink.commit()
    except BaseException:
        sink.abort()
        raise
    lines = newlines + (1 if last != b"\n" else 0)
    transport.log.info("Downloaded file %s to %s (%d bytes, %d lines).", file.id, where, size, lines)
    return DownloadResult(where, size, lines)


def result_lines(transport: SyncTransport, file_id: str) -> Iterator[ResultLine]:
    """The result lines of an output or error file, streamed (blank lines skipped)."""
    path = api_path("files", file_id, "content")
    for number, line in split_lines(transport.iter_content(path)):
        if not line.strip():
            continue
        try:
            yield ResultLine.model_validate_json(line)
        except ValidationError as exc:
            problem = (
                f"line {number} of file {file_id} is not a result line: {describe_validation_error(exc)}"
            )
            raise MKA1InvalidResponseError(200, problem, method="GET", path=path) from None
