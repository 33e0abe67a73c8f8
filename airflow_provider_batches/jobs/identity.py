"""Who a job's batches belong to: the keys and metadata that let every try find the batches it made.

Every batch of a job carries, in its metadata, the job's key (the task instance: dag, run, task, map
index), the input's fingerprint, its round and its shard; its idempotency key (the hook's
``airflow_idempotency_key``) derives from all four. A retry or a cleared task lists the recent batches
once and re-attaches to each one it finds, whatever its status (a round's expired or cancelled batch
is that round's result: its unfinished requests go into the next round, so it is never created
again); one of the same job with another fingerprint was made from another input, and the stated
policy (``on_input_change``) says what happens to it. Shards without a batch are created through the
hook (``submit_batch``), under its reattach rule. No state file: the batches are the state. This
module holds no I/O but one listing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_batches.constants import REATTACH_MAX_AGE
from airflow_provider_batches.models import Batch

if TYPE_CHECKING:
    from airflow_provider_batches.hooks.mka1 import MKA1Hook

JOB_KEY = "airflow_job"
FINGERPRINT_KEY = "airflow_job_fingerprint"
ROUND_KEY = "airflow_job_round"
SHARD_KEY = "airflow_job_shard"
LOOKBACK_PER_ROUND = REATTACH_MAX_AGE
"""How far back a job's batches are looked for, per round it may have (a round lasts at most 24 h)."""
MAX_LIST_PAGES = 100


def batch_key(job_key: str, fingerprint: str, round_no: int, shard: int) -> str:
    """The idempotency key of one batch of a job: ``af-`` and 32 hex digits."""
    identity = json.dumps([job_key, fingerprint, round_no, shard])
    return "af-" + hashlib.sha256(identity.encode()).hexdigest()[:32]


def batch_metadata(
    user: Mapping[str, str] | None, job_key: str, fingerprint: str, round_no: int, shard: int
) -> dict[str, str]:
    """The metadata of one batch of a job: the user's pairs and the job's."""
    return {
        **(user or {}),
        JOB_KEY: job_key,
        FINGERPRINT_KEY: fingerprint[:32],
        ROUND_KEY: str(round_no),
        SHARD_KEY: str(shard),
    }


def check_user_metadata(metadata: Mapping[str, str] | None) -> None:
    """:raises ValueError: a key of the job's own (``airflow_...``)."""
    metadata = metadata or {}
    reserved = sorted(k for k in metadata if str(k).startswith("airflow_"))
    if reserved:
        raise ValueError(f"metadata keys starting with 'airflow_' are the job's own: {reserved}.")


@dataclass
class FoundBatches:
    """The batches of one job found in the listing."""

    current: dict[tuple[int, int], Batch] = field(default_factory=dict)
    """Made from this input: by (round, shard), the newest of each."""
    stale: list[Batch] = field(default_factory=list)
    """Made from another input (another fingerprint)."""

    def rounds(self) -> int:
        """How many rounds have at least one batch."""
        return max((r for r, _ in self.current), default=-1) + 1

    def of_round(self, round_no: int) -> dict[int, Batch]:
        """
        The current batches of round ``round_no``, by shard.

        :param round_no: the round, from 0.
        """
        return {shard: b for (r, shard), b in self.current.items() if r == round_no}


def find_job_batches(hook: MKA1Hook, job_key: str, fingerprint: str, rounds: int) -> FoundBatches:
    """
    List the recent batches once (newest first) and keep those of ``job_key``.

    :param rounds: how many rounds the job may have: the listing looks back 25 hours per round.
    """
    found = FoundBatches()
    cutoff = time.time() - LOOKBACK_PER_ROUND * rounds
    for seen, batch in enumerate(hook.list_batches(page_size=100)):
        if batch.created_at < cutoff or seen >= MAX_LIST_PAGES * 100:
            break
        metadata = batch.metadata or {}
        if metadata.get(JOB_KEY) != job_key:
            continue
        if metadata.get(FINGERPRINT_KEY) != fingerprint[:32]:
            found.stale.append(batch)
            continue
        try:
            where = (int(metadata[ROUND_KEY]), int(metadata[SHARD_KEY]))
        except (KeyError, TypeError, ValueError):
            continue
        found.current.setdefault(where, batch)  # newest first: the first seen wins
    return found
