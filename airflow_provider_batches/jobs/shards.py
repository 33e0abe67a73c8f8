"""Splitting a job's requests into shard files at line boundaries, within the per-batch limits.

Round 0 streams the input once: every line is checked (:mod:`.inputs`), indexed (:mod:`.index`, which
refuses a repeated ``custom_id``), hashed into the input's fingerprint and appended to the current
shard file. A later round writes the lines to resend, read back byte for byte from round 0's shard
files. The split is deterministic: the same input and limits give the same shards on every try. This
module only writes files in the job's scratch directory; it never talks to the API.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from airflow_provider_batches.exceptions import MKA1InvalidInputError
from airflow_provider_batches.jobs.index import JobIndex, Located
from airflow_provider_batches.jobs.inputs import iter_request_lines

DEFAULT_MAX_REQUESTS_PER_BATCH = 50_000
DEFAULT_MAX_BYTES_PER_BATCH = 200 * 1024 * 1024
_WRITE_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class Shard:
    """One shard file of a round: what one batch is created from."""

    number: int
    path: Path
    requests: int
    bytes: int


@dataclass(frozen=True)
class PreparedInput:
    """What round 0 learnt from the input."""

    fingerprint: str
    """SHA-256 (hex) of the endpoint, the limits and every request line: what the batches are made of."""
    requests: int
    shards: list[Shard]


def check_limits(max_requests: int, max_bytes: int) -> None:
    """:raises ValueError: a limit that is not a positive int."""
    for name, value in (("max_requests_per_batch", max_requests), ("max_bytes_per_batch", max_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class _ShardWriter:
    """Appends lines to numbered shard files, starting a new one before a limit would be passed."""

    def __init__(self, directory: Path, max_requests: int, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.shards: list[Shard] = []
        self._file: IO[bytes] | None = None
        self._requests = self._bytes = 0

    def add(self, raw: bytes) -> tuple[int, int]:
        """Append one line; return ``(shard number, offset in it)``."""
        if (
            self._file is None
            or self._requests >= self.max_requests
            or self._bytes + len(raw) > self.max_bytes
        ):
            self._close()
            path = self.directory / f"shard-{len(self.shards):05d}.jsonl"
            self._file = open(path, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
        offset = self._bytes
        self._file.write(raw)
        self._requests += 1
        self._bytes += len(raw)
        return len(self.shards), offset

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            path = self.directory / f"shard-{len(self.shards):05d}.jsonl"
            self.shards.append(Shard(len(self.shards), path, self._requests, self._bytes))
        self._file, self._requests, self._bytes = None, 0, 0

    def finish(self) -> list[Shard]:
        self._close()
        return self.shards


def split_input(
    requests: Any,
    endpoint: str,
    index: JobIndex,
    directory: Path,
    *,
    max_requests: int,
    max_bytes: int,
    model: str | None = None,
    system_prompt: str | None = None,
    request_params: dict[str, Any] | None = None,
) -> PreparedInput:
    """
    Round 0: check, index and shard every request of the input, streaming it once.

    :raises MKA1InvalidInputError: a bad line (its number and what is wrong), a repeated ``custom_id``,
        a line larger than ``max_bytes``, or no request at all.
    """
    digest = hashlib.sha256(json.dumps([endpoint, max_requests, max_bytes]).encode())
    writer = _ShardWriter(directory, max_requests, max_bytes)
    lines = iter_request_lines(
        requests, endpoint, model=model, system_prompt=system_prompt, request_params=request_params
    )
    for number, raw, custom_id in lines:
        if len(raw) > max_bytes:
            raise MKA1InvalidInputError(
                f"Line {number} ({custom_id}) is {len(raw)} bytes, more than max_bytes_per_batch={max_bytes}."
            )
        digest.update(raw)
        shard, offset = writer.add(raw)
        index.add(custom_id, number, shard, offset, len(raw))
    index.flush()
    shards = writer.finish()
    if index.count == 0:
        raise MKA1InvalidInputError("The requests file has no request lines.")
    return PreparedInput(digest.hexdigest(), index.count, shards)


def split_resubmission(
    index: JobIndex,
    sources: list[Shard],
    directory: Path,
    round_no: int,
    *,
    max_requests: int,
    max_bytes: int,
) -> list[Shard]:
    """
    A later round: write the requests to resend (their original lines, from round 0's shard files) into
    new shards, and mark them sent in this round.
    """
    writer = _ShardWriter(directory, max_requests, max_bytes)
    handles: dict[int, IO[bytes]] = {}
    sent: list[int] = []
    current = 0
    try:
        for request, raw in _read_back(index.resubmittable(), sources, handles):
            shard, _ = writer.add(raw)
            if shard != current or len(sent) >= 10_000:
                index.mark_sent(round_no, current, sent)
                sent, current = [], shard
            sent.append(request.pos)
        index.mark_sent(round_no, current, sent)
    finally:
        for handle in handles.values():
            handle.close()
    return writer.finish()


def _read_back(
    located: Iterable[Located], sources: list[Shard], handles: dict[int, IO[bytes]]
) -> Iterator[tuple[Located, bytes]]:
    for request in located:
        handle = handles.get(request.shard)
        if handle is None:
            handle = handles[request.shard] = open(sources[request.shard].path, "rb")  # noqa: SIM115
        handle.seek(request.offset)
        yield request, handle.read(request.length)
