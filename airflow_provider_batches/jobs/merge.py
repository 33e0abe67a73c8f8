"""The merge: one results row per request, in input order, written atomically to ``result_path``.

Rows come from the index (:class:`.index.JobIndex`, in input order) and, for answered requests, from
the result line on disk; the file appears complete or not at all (written under a temporary name
beside it, then renamed). The merge also adds up the answers' token usage and, with a pydantic
``response_model``, parses each answer's assistant message into it. It never talks to the API.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ValidationError

from airflow_provider_batches.exceptions import MKA1InvalidInputError
from airflow_provider_batches.jobs import jsonl
from airflow_provider_batches.jobs.index import NEVER_RAN, SUCCEEDED, JobIndex

RESULTS_NAME = "results.jsonl"
MANIFEST_NAME = "manifest.json"
RAW_DIR = "raw"
INVALID_OUTPUT = "invalid_output"
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "total_tokens")
_BUFFER = 1024 * 1024


@dataclass
class MergeCounts:
    """What the rows of a results file hold, counted while writing them."""

    requests: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    invalid_output: int = 0
    never_ran: int = 0
    usage: Counter[str] = field(default_factory=Counter)

    @property
    def not_succeeded(self) -> int:
        """The requests without an answer: failed, with an invalid output, or never run."""
        return self.requests - self.succeeded


def resolve_dir(result_path: Any) -> Any:
    """``result_path`` as a local ``Path`` or an ``ObjectStoragePath`` (``file://`` is local)."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    try:
        if isinstance(result_path, str) and "://" in result_path:
            result_path = ObjectStoragePath(result_path)
        if isinstance(result_path, ObjectStoragePath):
            if result_path.protocol in ("file", "local"):
                return Path(result_path.path)
            result_path.fs  # noqa: B018 - an unknown scheme fails here, before any batch exists
            return result_path
    except ValueError as exc:
        raise MKA1InvalidInputError(f"Cannot use result_path {str(result_path)!r}: {exc}") from None
    if isinstance(result_path, (str, os.PathLike)) and str(result_path).strip():
        return Path(result_path)
    raise MKA1InvalidInputError(f"result_path must be a directory path or URL, got {result_path!r}.")


class AtomicFile:
    """A file written under a temporary name in ``directory`` and renamed to ``name`` on :meth:`commit`."""

    def __init__(self, directory: Any, name: str) -> None:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        # Not isinstance(Path): on Airflow 2 an ObjectStoragePath is a pathlib.Path too.
        self.local = not isinstance(directory, ObjectStoragePath)
        if self.local:
            directory.mkdir(parents=True, exist_ok=True)
        self.target = directory / name
        # One temporary name per target: the retry of a killed merge overwrites what it left.
        self.tmp = directory / f".{name}.part"
        self.file: IO[bytes] = self.tmp.open("wb") if not self.local else open(self.tmp, "wb", _BUFFER)  # noqa: SIM115

    def commit(self) -> None:
        """
        Close the temporary file (flushed and fsynced, if local) and rename it to the target, which appears
        complete or not at all.
        """
        if self.local:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.target)
        else:
            self.file.close()
            self.tmp.rename(self.target)

    def abort(self) -> None:
        """Close and remove the temporary file, leaving the target as it was; never raises."""
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(Exception):
            self.tmp.unlink()


def write_atomically(directory: Any, name: str, data: bytes) -> str:
    """
    Write ``data`` to ``name`` in ``directory`` through an :class:`AtomicFile`.

    :param directory: a local ``Path`` or an ``ObjectStoragePath`` (see :func:`resolve_dir`).
    :param name: the file's name.
    :param data: the file's whole content.
    :return: the file's path or URI.
    """
    out = AtomicFile(directory, name)
    try:
        out.file.write(data)
        out.commit()
    except BaseException:
        out.abort()
        raise
    return str(out.target)


def copy_atomically(source: Path, directory: Any, name: str) -> None:
    """
    Copy the local file ``source`` to ``name`` in ``directory`` through an :class:`AtomicFile`, in
    chunks.

    :param source: the local file to copy.
    :param directory: a local ``Path`` or an ``ObjectStoragePath`` (see :func:`resolve_dir`).
    :param name: the copy's name.
    """
    out = AtomicFile(directory, name)
    try:
        with open(source, "rb") as handle:
            shutil.copyfileobj(handle, out.file, _BUFFER)
        out.commit()
    except BaseException:
        out.abort()
        raise


def assistant_text(body: Any) -> str | None:
    """The assistant message of a chat completion or a Responses answer, or ``None``."""
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else None
    output = body.get("output")
    if isinstance(output, list):
        texts: list[str] = [
            part["text"]
            for item in output
            if isinstance(item, dict) and item.get("type") == "message"
            for part in item.get("content") or []
            if isinstance(part, dict)
            and part.get("type") == "output_text"
            and isinstance(part.get("text"), str)
        ]
        return "".join(texts) if texts else None
    return None


def write_results(
    index: JobIndex, directory: Any, response_model: type[BaseModel] | None = None
) -> tuple[str, MergeCounts]:
    """
    Write ``results.jsonl`` in ``directory``: one row per request, in input order.

    :return: the file's path or URL, and the counts of its rows.
    """
    counts = MergeCounts()
    out = AtomicFile(directory, RESULTS_NAME)
    handles: dict[str, IO[bytes]] = {}
    try:
        for item in index.outcomes():
            row: dict[str, Any] = {
                "custom_id": item.custom_id,
                "response": None,
                "error": None,
                "batch_id": item.batch_id,
                "attempts": item.attempts,
            }
            if response_model is not None:
                row["output"] = None
            counts.requests += 1
            if item.status == SUCCEEDED and item.file is not None:
                handle = handles.get(item.file)
                if handle is None:
                    handle = handles[item.file] = open(item.file, "rb")  # noqa: SIM115
                handle.seek(item.offset or 0)
                response = jsonl.loads(handle.read(item.length or 0)).get("response") or {}
                body = response.get("body")
                row["response"] = body
                _add_usage(counts.usage, body)
                if response_model is not None:
                    _parse_output(row, body, response_model)
                if row["error"] is None:
                    counts.succeeded += 1
                else:
                    counts.invalid_output += 1
            else:
                row["error"] = {"code": item.code or "unknown_error", "message": item.message}
                if item.status == NEVER_RAN:
                    counts.never_ran += 1
                else:
                    counts.failed[item.code or "unknown_error"] += 1
            out.file.write(jsonl.dumps(row) + b"\n")
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        for handle in handles.values():
            handle.close()
    return str(out.target), counts


def _add_usage(usage: Counter[str], body: Any) -> None:
    found = body.get("usage") if isinstance(body, dict) else None
    if isinstance(found, dict):
        for key in USAGE_KEYS:
            value = found.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                usage[key] += value


def _parse_output(row: dict[str, Any], body: Any, model: type[BaseModel]) -> None:
    text = assistant_text(body)
    try:
        if text is None:
            raise ValueError("the answer has no assistant message to parse")
        row["output"] = model.model_validate_json(text).model_dump(mode="json")
    except (ValidationError, ValueError) as exc:
        row["output"] = None
        row["error"] = {"code": INVALID_OUTPUT, "message": str(exc)[:1000]}
