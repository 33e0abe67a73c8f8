"""The emulator's state on disk: JSON metadata (written atomically), file blobs, and the clock.

Layout of a data directory::

    clock.json            the emulator clock's anchor, so that a restart keeps its time
    runs.json             how many times each owner ran each line failing only ``times`` times
    files/<id>.json       one File's metadata        blobs/<id>   its bytes
    batches/<id>.json     one Batch's record          batches/<id>.input   a hard link to its input blob
    tmp/                  uploads and result files being written (emptied on start)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class Owner(NamedTuple):
    """Who a resource belongs to: a hash of the API key (never the key) and the X-On-Behalf-Of id."""

    key: str
    on_behalf_of: str | None


def atomic_write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, path)


class Clock:
    """The emulator clock: runs ``scale`` times faster than real time, can jump forward, survives restarts."""

    def __init__(self, path: Path, scale: float) -> None:
        self._path = path
        self._scale = scale
        real = time.time()
        emu = real
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            emu = saved["emu"] + (real - saved["real"]) * saved["scale"]
        self._anchor(real, emu)

    def _anchor(self, real: float, emu: float) -> None:
        self._real, self._emu = real, emu
        atomic_write_json(self._path, {"real": real, "emu": emu, "scale": self._scale})

    def now(self) -> float:
        return self._emu + (time.time() - self._real) * self._scale

    def advance(self, seconds: float) -> float:
        real = time.time()
        self._anchor(real, self._emu + (real - self._real) * self._scale + seconds)
        return self._emu


@dataclass
class FileRecord:
    id: str
    owner_key: str
    owner_obo: str | None
    seq: int
    bytes: int
    created_at: float
    filename: str
    purpose: str
    content_type: str
    sha256: str

    @property
    def owner(self) -> Owner:
        return Owner(self.owner_key, self.owner_obo)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "sha256": self.sha256,
        }


@dataclass
class BatchRecord:
    """A batch as persisted. ``status`` holds the last materialised state: ``validating``, ``in_progress``
    (validated; whether it reads as in_progress or finalizing is derived from the clock), ``cancelling``,
    or a terminal status. Timings are copied from the server at creation so that a restart with other
    flags does not reshuffle a running batch."""

    id: str
    owner_key: str
    owner_obo: str | None
    seq: int
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    max_concurrency: int | None
    created_at: float
    expires_at: float
    validation_seconds: float
    lines_per_second: float
    finalizing_seconds: float
    status: str = "validating"
    total: int = 0
    # 0-based indexes of the request lines that fail on purpose, sorted: request_counts derive from them.
    fail_lines: list[int] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None

    @property
    def owner(self) -> Owner:
        return Owner(self.owner_key, self.owner_obo)


def _load(directory: Path, cls: type[Any]) -> dict[str, Any]:
    records = []
    for path in directory.glob("*.json"):
        try:
            records.append(cls(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("Skipping unreadable record %s: %s", path, exc)
    return {r.id: r for r in sorted(records, key=lambda r: r.seq)}


class Store:
    """All files and batches, in memory (metadata only) and on disk."""

    def __init__(self, root: str | os.PathLike[str], time_scale: float) -> None:
        self.root = Path(root)
        for sub in ("files", "blobs", "batches"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir()
        self.clock = Clock(self.root / "clock.json", time_scale)
        self.files: dict[str, FileRecord] = _load(self.root / "files", FileRecord)
        self.batches: dict[str, BatchRecord] = _load(self.root / "batches", BatchRecord)
        self._runs_path = self.root / "runs.json"
        self.runs: dict[str, int] = (
            json.loads(self._runs_path.read_text(encoding="utf-8")) if self._runs_path.exists() else {}
        )
        self._seq = max([0, *(r.seq for r in self.files.values()), *(r.seq for r in self.batches.values())])

    def take_run(self, owner: Owner, line_digest: str, times: int) -> bool:
        """Count one more run of a line by ``owner``; whether it is one of its first ``times`` (it fails)."""
        key = f"{owner.key}|{owner.on_behalf_of or ''}|{line_digest}"
        runs = self.runs.get(key, 0)
        self.runs[key] = runs + 1
        return runs < times

    def save_runs(self) -> None:
        atomic_write_json(self._runs_path, self.runs)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def blob_path(self, file_id: str) -> Path:
        return self.root / "blobs" / file_id

    def batch_input_path(self, batch_id: str) -> Path:
        return self.root / "batches" / f"{batch_id}.input"

    def tmp_path(self, suffix: str = "") -> Path:
        return self.root / "tmp" / f"{uuid.uuid4().hex}{suffix}"

    def save_file(self, rec: FileRecord) -> None:
        atomic_write_json(self.root / "files" / f"{rec.id}.json", dataclasses.asdict(rec))
        self.files[rec.id] = rec

    def save_batch(self, rec: BatchRecord) -> None:
        atomic_write_json(self.root / "batches" / f"{rec.id}.json", dataclasses.asdict(rec))
        self.batches[rec.id] = rec

    def add_file(
        self,
        owner: Owner,
        blob: Path,
        *,
        filename: str,
        purpose: str,
        content_type: str,
        size: int,
        sha256: str,
    ) -> FileRecord:
        """Adopt ``blob`` (a file under tmp/) as a new File."""
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        os.replace(blob, self.blob_path(file_id))
        rec = FileRecord(
            id=file_id,
            owner_key=owner.key,
            owner_obo=owner.on_behalf_of,
            seq=self.next_seq(),
            bytes=size,
            created_at=self.clock.now(),
            filename=filename,
            purpose=purpose,
            content_type=content_type,
            sha256=sha256,
        )
        self.save_file(rec)
        return rec

    def delete_file(self, file_id: str) -> None:
        self.files.pop(file_id, None)
        (self.root / "files" / f"{file_id}.json").unlink(missing_ok=True)
        # A running batch keeps its input: batches/<id>.input is a hard link (or a copy) of this blob.
        self.blob_path(file_id).unlink(missing_ok=True)
