"""One try of a job, from its input and its batches: prepare, submit or reattach a round, collect, write.

A :class:`JobRun` rebuilds everything it knows on every try (and every resume after a deferral): it
streams the input into the index and the round-0 shards, lists the job's batches once, and then
replays the rounds, re-attaching to each batch that exists and creating only the missing ones. It
talks to the API only through the hook it is given; waiting and the task's outcome are the
operator's.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_batches.exceptions import MKA1Error, MKA1InvalidInputError
from airflow_provider_batches.jobs import identity
from airflow_provider_batches.jobs.collect import collect_batch
from airflow_provider_batches.jobs.index import JobIndex
from airflow_provider_batches.jobs.merge import (
    MANIFEST_NAME,
    RAW_DIR,
    MergeCounts,
    copy_atomically,
    write_atomically,
    write_results,
)
from airflow_provider_batches.jobs.shards import Shard, split_input, split_resubmission
from airflow_provider_batches.models import TERMINAL_STATUSES, Batch, BatchStatus
from airflow_provider_batches.outcome import describe_batch

if TYPE_CHECKING:
    from pydantic import BaseModel

    from airflow_provider_batches.hooks.mka1 import MKA1Hook

_NOT_RUNNING = TERMINAL_STATUSES | {BatchStatus.CANCELLING}


@dataclass(frozen=True)
class JobSpec:
    """What a job is made of: the operator's parameters, rendered."""

    requests: Any
    endpoint: str
    result_dir: Any
    max_requests: int
    max_bytes: int
    resubmit_rounds: int
    resubmit_codes: Collection[str]
    model: str | None = None
    system_prompt: str | None = None
    request_params: Mapping[str, Any] | None = None
    metadata: Mapping[str, str] | None = None
    max_concurrency: int | None = None
    response_model: type[BaseModel] | None = None
    keep_raw_files: bool = False
    on_input_change: str = "cancel_and_resubmit"


def cancel_batches(hook: MKA1Hook, batch_ids: Collection[str], why: str, log: Any) -> None:
    """
    Cancel each batch still running, logging why; a batch read terminal is left alone (it may have ended
    since the caller last looked), and one that cannot be read or cancelled is logged, not raised.
    """
    for batch_id in batch_ids:
        try:
            if hook.get_batch(batch_id).is_terminal:
                continue
            log.warning("Cancelling batch %s: %s.", batch_id, why)
            batch = hook.cancel_batch(batch_id)
        except MKA1Error as exc:
            log.warning("Could not cancel batch %s: %s", batch_id, exc)
        else:
            log.info("Batch %s is now %s.", batch.id, describe_batch(batch))


@dataclass
class JobRun:
    """One try's view of a job; made by :meth:`prepare`."""

    spec: JobSpec
    hook: MKA1Hook
    key: str
    fingerprint: str
    requests: int
    scratch: Path
    index: JobIndex
    shards0: list[Shard]
    found: identity.FoundBatches
    log: Any = field(default_factory=lambda: logging.getLogger(__name__))
    batches: list[list[str]] = field(default_factory=list)
    raw_files: list[Path] = field(default_factory=list)

    @classmethod
    @contextmanager
    def prepare(
        cls, spec: JobSpec, hook: MKA1Hook, key: str, scratch_dir: str | None, log: Any
    ) -> Iterator[JobRun]:
        """
        Check and shard the input, list the job's batches, apply ``on_input_change``; the scratch
        directory is removed on exit.

        :param key: the task instance's idempotency key (the job's key).
        """
        scratch = Path(scratch_dir or tempfile.gettempdir()) / f"mka1-job-{key[3:23]}"
        shutil.rmtree(scratch, ignore_errors=True)  # what a killed earlier try on this machine left
        scratch.mkdir(parents=True)
        index = JobIndex(scratch / "index.sqlite")
        try:
            prepared = split_input(
                spec.requests,
                spec.endpoint,
                index,
                scratch / "round-0",
                max_requests=spec.max_requests,
                max_bytes=spec.max_bytes,
                model=spec.model,
                system_prompt=spec.system_prompt,
                request_params=dict(spec.request_params or {}),
            )
            log.info(
                "Job input: %d requests in %d shards (fingerprint %s).",
                prepared.requests,
                len(prepared.shards),
                prepared.fingerprint[:16],
            )
            found = identity.find_job_batches(hook, key, prepared.fingerprint, spec.resubmit_rounds + 1)
            run = cls(
                spec,
                hook,
                key,
                prepared.fingerprint,
                prepared.requests,
                scratch,
                index,
                prepared.shards,
                found,
                log,
            )
            run._handle_stale()
            yield run
        finally:
            index.close()
            shutil.rmtree(scratch, ignore_errors=True)

    def _handle_stale(self) -> None:
        stale = self.found.stale
        if not stale:
            return
        ids = ", ".join(b.id for b in stale[:10]) + (" ..." if len(stale) > 10 else "")
        if self.spec.on_input_change == "fail":
            raise MKA1InvalidInputError(
                f"The input changed since earlier tries of this task instance created batches {ids} "
                "(another fingerprint); on_input_change='fail' refuses to submit it. Cancel those batches "
                "and run a new DAG run, or use on_input_change='cancel_and_resubmit'."
            )
        running = [b.id for b in stale if b.status not in _NOT_RUNNING]
        self.log.warning(
            "The input changed since earlier tries created batches %s: cancelling the %d unfinished ones "
            "and submitting the new input (on_input_change='cancel_and_resubmit').",
            ids,
            len(running),
        )
        cancel_batches(self.hook, running, "the job's input changed", self.log)

    def submit_round(self, round_no: int, shards: list[Shard]) -> dict[int, Batch]:
        """The batch of every shard of the round: the one found, or a new one (upload, create)."""
        found = self.found.of_round(round_no)
        batches: dict[int, Batch] = {}
        for shard in shards:
            batch = found.get(shard.number)
            if batch is not None:
                self.log.info("Round %d shard %d: reattached to batch %s.", round_no, shard.number, batch.id)
            else:
                batch = self._create(round_no, shard)
            batches[shard.number] = batch
        self.batches.append([b.id for b in batches.values()])
        self.log.info(
            "Round %d: %d batches for %d requests (%d reattached).",
            round_no,
            len(batches),
            sum(s.requests for s in shards),
            sum(1 for s in shards if s.number in found),
        )
        return batches

    def _create(self, round_no: int, shard: Shard) -> Batch:
        batch = self.hook.submit_batch(
            self.spec.endpoint,
            input_path=shard.path,
            metadata=identity.batch_metadata(
                self.spec.metadata, self.key, self.fingerprint, round_no, shard.number
            ),
            max_concurrency=self.spec.max_concurrency,
            idempotency_key=identity.batch_key(self.key, self.fingerprint, round_no, shard.number),
            input_fingerprint=self.fingerprint[:32],  # the job's, already in the key: no second read
        )
        self.log.info(
            "Round %d shard %d: %d requests (%d bytes) in batch %s.",
            round_no,
            shard.number,
            shard.requests,
            shard.bytes,
            batch.id,
        )
        return batch

    def collect_round(self, round_no: int, batches: Mapping[int, Batch]) -> list[Shard]:
        """
        Record the results of the round's terminal batches; return the next round's shards (empty when
        nothing is left to resend or no round is left).
        """
        for shard, batch in batches.items():
            self.raw_files += collect_batch(
                self.hook, self.index, batch, round_no, shard, self.scratch / "raw", self.spec.resubmit_codes
            )
        if round_no >= self.spec.resubmit_rounds or next(iter(self.index.resubmittable()), None) is None:
            return []
        return split_resubmission(
            self.index,
            self.shards0,
            self.scratch / f"round-{round_no + 1}",
            round_no + 1,
            max_requests=self.spec.max_requests,
            max_bytes=self.spec.max_bytes,
        )

    def write(self, started: float) -> tuple[dict[str, Any], MergeCounts]:
        """Write the results, the raw files if kept, and the manifest; return the manifest and counts."""
        directory = self.spec.result_dir
        results, counts = write_results(self.index, directory, self.spec.response_model)
        if self.spec.keep_raw_files:
            for path in self.raw_files:
                copy_atomically(path, directory / RAW_DIR, path.name)
        manifest: dict[str, Any] = {
            "results": results,
            "counts": {
                "requests": counts.requests,
                "succeeded": counts.succeeded,
                "failed": dict(sorted(counts.failed.items())),
                "invalid_output": counts.invalid_output,
                "never_ran": counts.never_ran,
                "resubmitted": self.index.resubmitted(),
            },
            "batches": self.batches,
            "rounds": len(self.batches),
            "usage": dict(sorted(counts.usage.items())),
            "elapsed_seconds": round(time.time() - started, 3),
            "fingerprint": self.fingerprint,
        }
        manifest["manifest"] = write_atomically(
            directory, MANIFEST_NAME, json.dumps(manifest, indent=2).encode() + b"\n"
        )
        return manifest, counts
