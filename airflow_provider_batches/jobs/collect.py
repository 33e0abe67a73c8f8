"""Collecting a round: download each terminal batch's output and error files and record every result.

The files are streamed to the job's scratch directory by the hook (``download_file``), then read once,
line by line, to record each result's status and where its line is (:class:`.index.JobIndex`); the
lines themselves stay on disk for the merge. Requests a batch returned nothing for get the batch's
reason (:func:`.resubmit.unfinished_lines`). It never decides the task's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_batches.exceptions import MKA1InvalidResponseError
from airflow_provider_batches.jobs import jsonl
from airflow_provider_batches.jobs.index import JobIndex
from airflow_provider_batches.jobs.resubmit import classify_result, unfinished_lines
from airflow_provider_batches.models import Batch

if TYPE_CHECKING:
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

log = logging.getLogger(__name__)
_CHUNK = 10_000


def collect_batch(
    hook: MKA1Hook,
    index: JobIndex,
    batch: Batch,
    round_no: int,
    shard: int,
    directory: Path,
    resubmit_codes: Collection[str],
) -> list[Path]:
    """
    Record the results of one terminal batch of ``round_no`` (the batch of ``shard``).

    :return: the raw files downloaded (output, error), for ``keep_raw_files``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    kept = []
    for kind, file_id in (("output", batch.output_file_id), ("error", batch.error_file_id)):
        if not file_id:
            continue
        path = directory / f"{batch.id}_{kind}.jsonl"
        hook.download_file(file_id, path)
        number = index.add_file(path)
        index.record(round_no, _results(path, number, batch.id, resubmit_codes))
        kept.append(path)
    status, code, message = unfinished_lines(batch, resubmit_codes)
    missing = index.close_shard(round_no, shard, batch.id, status, code, message)
    if missing:
        log.info("Batch %s returned no result for %d requests: %s (%s).", batch.id, missing, code, status)
    return kept


def _results(
    path: Path, file_no: int, batch_id: str, resubmit_codes: Collection[str]
) -> Iterator[tuple[str, str | None, str | None, str, int, int, int, str]]:
    offset = 0
    with open(path, "rb", buffering=1024 * 1024) as handle:
        for number, raw in enumerate(handle, 1):
            length = len(raw)
            if raw.strip():
                try:
                    line = jsonl.loads(raw)
                    custom_id = line["custom_id"]
                except (*jsonl.DECODE_ERRORS, KeyError, TypeError):  # type: ignore[misc]
                    raise MKA1InvalidResponseError(
                        200, f"line {number} of the results of batch {batch_id} is not a result line"
                    ) from None
                status, code, message = classify_result(line, resubmit_codes)
                yield status, code, message, batch_id, file_no, offset, length, str(custom_id)
            offset += length
