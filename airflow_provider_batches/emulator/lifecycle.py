"""The batch lifecycle: a batch's state is a function of its persisted timestamps and the emulator clock.

Only the steps that produce something are materialised, by :class:`Engine` ticking in the background:
validation (reads the input, fixes ``total`` and the lines that fail on purpose) and the terminal states
(write the output and error files). Between them, ``in_progress`` vs ``finalizing`` and ``request_counts``
are computed on each read, which is what makes a restart on the same data directory trivial.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from airflow_provider_batches.emulator.answers import answer, digest
from airflow_provider_batches.emulator.store import TERMINAL, BatchRecord, Owner, Store

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ERRORS = 100
# Inputs smaller than this are validated and processed on the event loop; bigger ones in a thread.
INLINE_BYTES = 1 << 20
# The HTTP status a gateway answers a line with for these error codes (transient: a retry may succeed).
TRANSIENT_STATUS = {
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "bad_gateway": 502,
    "service_unavailable": 503,
    "timeout": 504,
}


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


def finalizing_time(rec: BatchRecord) -> float:
    assert rec.in_progress_at is not None
    return rec.in_progress_at + rec.total / rec.lines_per_second


def completion_time(rec: BatchRecord) -> float:
    return finalizing_time(rec) + rec.finalizing_seconds


def lines_done(rec: BatchRecord, at: float) -> int:
    """How many request lines a batch has worked through at emulator time ``at``."""
    if rec.in_progress_at is None or at <= rec.in_progress_at:
        return 0
    if at >= finalizing_time(rec):
        return rec.total
    return min(rec.total, int((at - rec.in_progress_at) * rec.lines_per_second))


def _finalizing_at(rec: BatchRecord, until: float) -> float | None:
    if rec.in_progress_at is None or until < finalizing_time(rec):
        return None
    return finalizing_time(rec)


def view_batch(rec: BatchRecord, now: float) -> dict[str, Any]:
    """The Batch object as the API returns it at emulator time ``now``."""
    status = rec.status
    finalizing_at = rec.finalizing_at
    if status in TERMINAL:
        completed, failed = rec.completed, rec.failed
    else:
        if status == "cancelling":
            assert rec.cancelling_at is not None
            done = lines_done(rec, rec.cancelling_at)
            finalizing_at = _finalizing_at(rec, rec.cancelling_at)
        else:
            done = lines_done(rec, now)
            if status == "in_progress" and now >= finalizing_time(rec):
                status, finalizing_at = "finalizing", finalizing_time(rec)
        failed = bisect_left(rec.fail_lines, done)
        completed = done - failed
    return {
        "id": rec.id,
        "object": "batch",
        "endpoint": rec.endpoint,
        "errors": None if rec.errors is None else {"object": "list", "data": rec.errors},
        "input_file_id": rec.input_file_id,
        "completion_window": rec.completion_window,
        "status": status,
        "output_file_id": rec.output_file_id,
        "error_file_id": rec.error_file_id,
        "created_at": int(rec.created_at),
        "in_progress_at": _ts(rec.in_progress_at),
        "expires_at": _ts(rec.expires_at),
        "finalizing_at": _ts(finalizing_at),
        "completed_at": _ts(rec.completed_at),
        "failed_at": _ts(rec.failed_at),
        "expired_at": _ts(rec.expired_at),
        "cancelling_at": _ts(rec.cancelling_at),
        "cancelled_at": _ts(rec.cancelled_at),
        "request_counts": {"total": rec.total, "completed": completed, "failed": failed},
        "metadata": rec.metadata,
        "max_concurrency": rec.max_concurrency,
    }


def _request_lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of each non-blank line, read one at a time."""
    for lineno, raw in enumerate(fh, 1):
        if raw.strip():
            yield lineno, raw


def fail_reason(body: dict[str, Any]) -> dict[str, str] | None:
    """
    The documented way to make a line fail: ``"emulator_fail": true`` or ``{"code", "message"}``, and
    ``"times": n`` to fail only the first ``n`` runs of the line (see :func:`fail_times`).
    """
    flag = body.get("emulator_fail")
    if flag is True:
        return {
            "code": "emulator_fail",
            "message": "This request was made to fail on purpose (emulator_fail).",
        }
    if isinstance(flag, dict):
        return {
            "code": str(flag.get("code", "emulator_fail")),
            "message": str(flag.get("message", "This request was made to fail on purpose (emulator_fail).")),
        }
    return None


def fail_times(body: dict[str, Any]) -> int | None:
    """``emulator_fail.times``: how many runs of the line fail before it is answered; ``None``: all."""
    flag = body.get("emulator_fail")
    times = flag.get("times") if isinstance(flag, dict) else None
    return times if isinstance(times, int) and not isinstance(times, bool) and times >= 0 else None


def failed_response(reason: dict[str, str], request_id: str) -> dict[str, Any] | None:
    """The ``response`` of a failed line: a 429 or 5xx one for the transient codes, else ``None``."""
    status = TRANSIENT_STATUS.get(reason["code"])
    if status is None:
        return None
    return {
        "status_code": status,
        "request_id": request_id,
        "body": {"error": {"message": reason["message"], "type": reason["code"], "code": reason["code"]}},
    }


def validate_input(
    path: Path, endpoint: str, take_run: Callable[[str, dict[str, Any], int], bool] | None = None
) -> tuple[int, list[int], list[dict[str, Any]]]:
    """
    Check an input JSONL as the API does. Returns (request lines, indexes failing on purpose, errors).

    ``take_run(custom_id, body, times)`` counts one more run of a line failing only ``times`` times and
    says whether this run fails.
    """
    errors: list[dict[str, Any]] = []

    def error(code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(errors) < MAX_ERRORS:
            errors.append({"code": code, "message": message, "param": param, "line": line})

    seen: set[str] = set()
    failing: list[int] = []
    count = 0
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return (
            0,
            [],
            [{"code": "file_not_found", "message": "The input file is gone.", "param": None, "line": None}],
        )
    with fh:
        for lineno, raw in _request_lines(fh):
            index, count = count, count + 1
            try:
                obj = json.loads(raw)
            except ValueError:
                error("invalid_json_line", "This line is not parseable as valid JSON.", lineno)
                continue
            if not isinstance(obj, dict):
                error("invalid_json_line", "Each line must be a JSON object.", lineno)
                continue
            custom_id = obj.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                error(
                    "missing_custom_id",
                    "Each line needs a non-empty string 'custom_id'.",
                    lineno,
                    "custom_id",
                )
            elif custom_id in seen:
                error(
                    "duplicate_custom_id", f"The custom_id {custom_id!r} is not unique.", lineno, "custom_id"
                )
            else:
                seen.add(custom_id)
            if obj.get("method") != "POST":
                error("invalid_method", "'method' must be 'POST'.", lineno, "method")
            if obj.get("url") != endpoint:
                error("mismatched_url", f"'url' must be the batch's endpoint {endpoint!r}.", lineno, "url")
            body = obj.get("body")
            if not isinstance(body, dict):
                error("invalid_body", "'body' must be a JSON object.", lineno, "body")
            elif fail_reason(body) is not None:
                times = fail_times(body)
                if times is None or (
                    take_run is not None and isinstance(custom_id, str) and take_run(custom_id, body, times)
                ):
                    failing.append(index)
    if count == 0:
        error("empty_file", "The input file has no request lines.", None)
    return count, failing, errors


def write_results(
    rec: BatchRecord, source: Path, count: int, out_path: Path, err_path: Path
) -> tuple[int, int]:
    """Answer the first ``count`` request lines of ``source``. Returns (succeeded, failed)."""
    succeeded = failed = 0
    failing = set(rec.fail_lines)
    with open(source, "rb") as src, open(out_path, "wb") as out, open(err_path, "wb") as err:
        for index, (_, raw) in enumerate(_request_lines(src)):
            if index >= count:
                break
            obj = json.loads(raw)
            custom_id, body = obj["custom_id"], obj["body"]
            line_id = digest(rec.id, custom_id)
            reason = fail_reason(body) if index in failing else None
            if reason is None:
                assert rec.in_progress_at is not None
                created = int(rec.in_progress_at + (index + 1) / rec.lines_per_second)
                result: dict[str, Any] = {
                    "id": f"batch_req_{line_id[:24]}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": 200,
                        "request_id": f"req_{line_id[24:48]}",
                        "body": answer(rec.endpoint, custom_id, body, created),
                    },
                    "error": None,
                }
                succeeded += 1
                target = out
            else:
                result = {
                    "id": f"batch_req_{line_id[:24]}",
                    "custom_id": custom_id,
                    "response": failed_response(reason, f"req_{line_id[24:48]}"),
                    "error": reason,
                }
                failed += 1
                target = err
            target.write(json.dumps(result, separators=(",", ":")).encode() + b"\n")
    return succeeded, failed


class Engine:
    """Creates, cancels and advances batches. Only the event loop thread touches the records."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = asyncio.Lock()
        self.active = [r.id for r in store.batches.values() if r.status not in TERMINAL]

    async def run(self, interval: float = 0.05) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(interval)

    async def tick(self) -> None:
        async with self._lock:
            for batch_id in list(self.active):
                try:
                    await self._advance(self.store.batches[batch_id])
                except Exception:
                    log.exception("Could not advance batch %s", batch_id)

    async def create(
        self,
        owner: Owner,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        max_concurrency: int,
        window_seconds: float,
        validation_seconds: float,
        lines_per_second: float,
        finalizing_seconds: float,
    ) -> BatchRecord:
        now = self.store.clock.now()
        rec = BatchRecord(
            id=f"batch_{os.urandom(12).hex()}",
            owner_key=owner.key,
            owner_obo=owner.on_behalf_of,
            seq=self.store.next_seq(),
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            metadata=metadata,
            max_concurrency=max_concurrency,
            created_at=now,
            expires_at=now + window_seconds,
            validation_seconds=validation_seconds,
            lines_per_second=lines_per_second,
            finalizing_seconds=finalizing_seconds,
        )
        # The batch keeps its own link to the input, so deleting the input File does not disturb it.
        source, target = self.store.blob_path(input_file_id), self.store.batch_input_path(rec.id)
        try:
            os.link(source, target)
        except OSError:
            await asyncio.to_thread(shutil.copyfile, source, target)
        self.store.save_batch(rec)
        self.active.append(rec.id)
        return rec

    def _take_run(self, rec: BatchRecord) -> Callable[[str, dict[str, Any], int], bool]:
        def take(custom_id: str, body: dict[str, Any], times: int) -> bool:
            return self.store.take_run(rec.owner, digest(custom_id, body), times)

        return take

    def cancel(self, rec: BatchRecord) -> bool:
        """Ask a batch to stop; False when it is already terminal."""
        if rec.status in TERMINAL:
            return False
        if rec.status != "cancelling":
            rec.status, rec.cancelling_at = "cancelling", self.store.clock.now()
            self.store.save_batch(rec)
        return True

    async def _blocking(self, rec: BatchRecord, fn: Callable[..., T], *args: Any) -> T:
        try:
            size = self.store.batch_input_path(rec.id).stat().st_size
        except OSError:
            size = 0
        if size < INLINE_BYTES:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def _advance(self, rec: BatchRecord) -> None:
        now = self.store.clock.now()
        if rec.status == "cancelling":
            assert rec.cancelling_at is not None
            at = rec.cancelling_at + rec.finalizing_seconds
            if now >= at:
                await self._finish(rec, "cancelled", at, lines_done(rec, rec.cancelling_at))
            return
        if rec.status == "validating":
            validated_at = rec.created_at + rec.validation_seconds
            if rec.expires_at <= validated_at:
                if now >= rec.expires_at:
                    await self._finish(rec, "expired", rec.expires_at, 0)
                return
            if now < validated_at:
                return
            source = self.store.batch_input_path(rec.id)
            total, failing, errors = await self._blocking(
                rec, validate_input, source, rec.endpoint, self._take_run(rec)
            )
            self.store.save_runs()
            if rec.status != "validating":  # cancelled while we read
                return
            if errors:
                rec.status, rec.failed_at, rec.errors = "failed", validated_at, errors
                self._close(rec)
                return
            rec.status, rec.in_progress_at, rec.total, rec.fail_lines = (
                "in_progress",
                validated_at,
                total,
                failing,
            )
            self.store.save_batch(rec)
        end = completion_time(rec)
        if rec.expires_at < end:
            if now >= rec.expires_at:
                await self._finish(rec, "expired", rec.expires_at, lines_done(rec, rec.expires_at))
        elif now >= end:
            await self._finish(rec, "completed", end, rec.total)

    async def _finish(self, rec: BatchRecord, status: str, at: float, count: int) -> None:
        """Write the results of the first ``count`` lines and enter the terminal ``status`` at time ``at``."""
        before = rec.status
        succeeded = failed = 0
        out_path, err_path = self.store.tmp_path(), self.store.tmp_path()
        try:
            if count:
                source = self.store.batch_input_path(rec.id)
                succeeded, failed = await self._blocking(
                    rec, write_results, rec, source, count, out_path, err_path
                )
            if rec.status != before:  # a cancel came in while we wrote: it wins
                return
            owner = rec.owner
            for n, path, kind in ((succeeded, out_path, "output"), (failed, err_path, "error")):
                if not n:
                    continue
                f = self.store.add_file(
                    owner,
                    path,
                    filename=f"{rec.id}_{kind}.jsonl",
                    purpose="batch",  # the SDK lists no other purpose a batch's files could have
                    content_type="application/jsonl",
                    size=path.stat().st_size,
                    sha256=await self._blocking(rec, _sha256, path),
                )
                if kind == "output":
                    rec.output_file_id = f.id
                else:
                    rec.error_file_id = f.id
        finally:
            out_path.unlink(missing_ok=True)
            err_path.unlink(missing_ok=True)
        stopped = rec.cancelling_at if status == "cancelled" and rec.cancelling_at is not None else at
        rec.finalizing_at = _finalizing_at(rec, stopped)
        rec.status, rec.completed, rec.failed = status, succeeded, failed
        setattr(rec, f"{status}_at", at)
        self._close(rec)

    def _close(self, rec: BatchRecord) -> None:
        self.store.save_batch(rec)
        self.active.remove(rec.id)
        self.store.batch_input_path(rec.id).unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
