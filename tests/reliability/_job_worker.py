"""A batch job's task run in its own process, so that a test can SIGKILL it at a chosen stage.

    python -m tests.reliability._job_worker <run_id> <requests> <result_dir> <scratch_dir> [stage]

``stage`` is where the worker stops, prints ``at <stage>`` and sleeps, to be killed: ``split`` (half-way
through reading the input), ``upload`` (shard 1 uploaded, its batch not created yet), ``wait``
(every batch created, waiting on them), ``merge`` (the results written under their temporary name, not
renamed yet). Without it the task runs to the end and prints its manifest. The operator's code is
unchanged; only those four points are wrapped.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def _stop(stage: str) -> None:
    sys.stdout.write(f"at {stage}\n")
    sys.stdout.flush()
    time.sleep(120)


def _wrap(owner: Any, name: str, stage: str, when: int, before: bool = False) -> None:
    original = getattr(owner, name)
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if before and calls[0] == when:
            _stop(stage)
        result = original(*args, **kwargs)
        if not before and calls[0] == when:
            _stop(stage)
        return result

    setattr(owner, name, wrapped)


def main(argv: list[str]) -> None:
    from airflow_provider_batches.hooks.mka1 import MKA1Hook
    from airflow_provider_batches.jobs.index import JobIndex
    from airflow_provider_batches.jobs.merge import AtomicFile
    from airflow_provider_batches.jobs.waiting import JobWait
    from airflow_provider_batches.operators.mka1 import MKA1BatchJobOperator
    from tests.reliability.support import FakeTI, make_context

    run_id, requests, result_dir, scratch = argv[:4]
    stage = argv[4] if len(argv) > 4 else None
    if stage == "split":
        _wrap(JobIndex, "add", stage, when=20)
    elif stage == "upload":
        _wrap(MKA1Hook, "upload_file", stage, when=2)
    elif stage == "wait":
        _wrap(JobWait, "next_polls", stage, when=1, before=True)
    elif stage == "merge":
        _wrap(AtomicFile, "commit", stage, when=1, before=True)
    op = MKA1BatchJobOperator(
        task_id="job",
        requests=requests,
        result_path=result_dir,
        scratch_dir=scratch,
        max_requests_per_batch=10,
        poll_interval=0.05,
        max_poll_interval=0.2,
    )
    ti = FakeTI(task_id="job", run_id=run_id)
    manifest = op.execute(make_context(ti))
    sys.stdout.write(json.dumps(manifest) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
