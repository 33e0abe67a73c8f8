"""The on-disk index of a job (SQLite): every request by ``custom_id``, where its line is, what became of it.

One row per request, in input order: where its line sits in the shard files of round 0 (so that a
resubmission reads the original line back), the round and shard it was last sent in, how many times,
and its result so far (status, error code, the batch and where its result line sits in the downloaded
output). It keeps memory bounded at any input size (SQLite pages, not Python objects) and is scratch:
rebuilt from the input and the batches on every try, never the source of truth. It does no I/O but its
own file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from airflow_provider_batches.exceptions import MKA1InvalidInputError

SUCCEEDED = "succeeded"
FAILED = "failed"
RETRY_FAILED = "retry_failed"
NEVER_RAN = "never_ran"
RESUBMITTABLE = (RETRY_FAILED, NEVER_RAN)
_CHUNK = 10_000


class Located(NamedTuple):
    """A request line as the index knows it: its position and where its bytes are."""

    pos: int
    custom_id: str
    shard: int
    offset: int
    length: int


class Outcome(NamedTuple):
    """One request's final state, for the merge: in input order."""

    pos: int
    custom_id: str
    attempts: int
    status: str | None
    code: str | None
    message: str | None
    batch_id: str | None
    file: str | None
    offset: int | None
    length: int | None


class JobIndex:
    """
    The index of one job, in a SQLite file of the job's scratch directory.

    :param path: the SQLite file (created; an existing one is replaced).
    """

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        # Scratch: rebuilt by the next try if this one dies, so no journal and no fsync.
        self.db.executescript(
            """
            PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;
            CREATE TABLE requests (
                pos INTEGER PRIMARY KEY, custom_id TEXT NOT NULL UNIQUE, line INTEGER NOT NULL,
                src_shard INTEGER NOT NULL, src_offset INTEGER NOT NULL, src_length INTEGER NOT NULL,
                round INTEGER NOT NULL DEFAULT 0, shard INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 1,
                status TEXT, code TEXT, message TEXT, batch_id TEXT,
                rfile INTEGER, roffset INTEGER, rlength INTEGER);
            CREATE TABLE files (no INTEGER PRIMARY KEY, path TEXT NOT NULL);
            """
        )
        self._pending: list[tuple[int, str, int, int, int, int]] = []
        self.count = 0

    def close(self) -> None:
        """Close the SQLite connection; the index cannot be read afterwards (the file stays where it is)."""
        self.db.close()

    # -- round 0: the input ---------------------------------------------------------------------------

    def add(self, custom_id: str, line: int, shard: int, offset: int, length: int) -> None:
        """Add the next request of the input (buffered; :meth:`flush` before reading)."""
        self._pending.append((self.count, custom_id, line, shard, offset, length))
        self.count += 1
        if len(self._pending) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write buffered requests.

        :raises MKA1InvalidInputError: a ``custom_id`` is not unique; names both lines.
        """
        rows, self._pending = self._pending, []
        if not rows:
            return
        sql = "INSERT INTO requests (pos, custom_id, line, src_shard, src_offset, src_length, shard)"
        self.db.execute("BEGIN")
        try:
            self.db.executemany(sql + " VALUES (?, ?, ?, ?, ?, ?, ?)", [(*r, r[3]) for r in rows])
        except sqlite3.IntegrityError:
            self.db.execute("ROLLBACK")
            self._raise_duplicate(rows)
        self.db.execute("COMMIT")

    def _raise_duplicate(self, rows: list[tuple[int, str, int, int, int, int]]) -> None:
        seen: dict[str, int] = {}
        for _, custom_id, line, *_rest in rows:
            first = seen.get(custom_id)
            if first is None:
                found = self.db.execute(
                    "SELECT line FROM requests WHERE custom_id = ?", (custom_id,)
                ).fetchone()
                first = found[0] if found else None
            if first is not None:
                raise MKA1InvalidInputError(
                    f"Line {line} repeats custom_id {custom_id!r} of line {first}: "
                    "every custom_id must be unique."
                )
            seen[custom_id] = line
        raise MKA1InvalidInputError("A custom_id is not unique.")  # not reached: the insert said so

    # -- rounds -----------------------------------------------------------------------------------------

    def resubmittable(self) -> Iterator[Located]:
        """The requests the next round resends, in input order, with where their original line is."""
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT pos, custom_id, src_shard, src_offset, src_length FROM requests "
                f"WHERE pos > ? AND status IN {RESUBMITTABLE} ORDER BY pos LIMIT ?",
                (last, _CHUNK),
            ).fetchall()
            if not rows:
                return
            yield from (Located(*row) for row in rows)
            last = rows[-1][0]

    def mark_sent(self, round_no: int, shard: int, positions: Iterable[int]) -> None:
        """Record that these requests go out again in ``round_no``, in ``shard`` of that round."""
        self.db.execute("BEGIN")
        self.db.executemany(
            "UPDATE requests SET round = ?, shard = ?, attempts = attempts + 1, status = NULL, code = NULL, "
            "message = NULL WHERE pos = ?",
            ((round_no, shard, pos) for pos in positions),
        )
        self.db.execute("COMMIT")

    def add_file(self, path: Path) -> int:
        """Register a downloaded result file; its number goes with the result lines found in it."""
        cursor = self.db.execute("INSERT INTO files (path) VALUES (?)", (str(path),))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def record(
        self, round_no: int, rows: Iterable[tuple[str, str | None, str | None, str, int, int, int, str]]
    ) -> int:
        """
        Record result lines of ``round_no``: ``(status, code, message, batch_id, file, offset, length,
        custom_id)``. A line whose ``custom_id`` was not sent in that round is ignored.

        :return: how many requests got a result.
        """
        self.db.execute("BEGIN")
        before = self.db.total_changes
        self.db.executemany(
            "UPDATE requests SET status = ?, code = ?, message = ?, batch_id = ?, rfile = ?, roffset = ?, "
            "rlength = ? WHERE custom_id = ? AND round = ? AND status IS NULL",
            ((*row, round_no) for row in rows),
        )
        changed = self.db.total_changes - before
        self.db.execute("COMMIT")
        return changed

    def close_shard(
        self, round_no: int, shard: int, batch_id: str, status: str, code: str, message: str
    ) -> int:
        """Give every request of a round's shard that got no result line ``status`` (never ran).

        :return: how many there were.
        """
        cursor = self.db.execute(
            "UPDATE requests SET status = ?, code = ?, message = ?, batch_id = ?, rfile = NULL "
            "WHERE round = ? AND shard = ? AND status IS NULL",
            (status, code, message, batch_id, round_no, shard),
        )
        return cursor.rowcount

    # -- the merge ----------------------------------------------------------------------------------------

    def outcomes(self) -> Iterator[Outcome]:
        """Every request in input order, with its final state."""
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT r.pos, r.custom_id, r.attempts, r.status, r.code, r.message, r.batch_id, f.path, "
                "r.roffset, r.rlength FROM requests r LEFT JOIN files f ON f.no = r.rfile "
                "WHERE r.pos > ? ORDER BY r.pos LIMIT ?",
                (last, _CHUNK),
            ).fetchall()
            if not rows:
                return
            yield from (Outcome(*row) for row in rows)
            last = rows[-1][0]

    def resubmitted(self) -> int:
        """How many times requests were sent again after their first round."""
        return int(self.db.execute("SELECT COALESCE(SUM(attempts - 1), 0) FROM requests").fetchone()[0])
