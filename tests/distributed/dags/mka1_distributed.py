"""
The DAGs of the distributed scenario (tests/distributed): a deferred fan-out; the waits a lost worker hits.

mka1_distributed_fanout: write_inputs -> batch (20 mapped, deferred) -> download (20 mapped); outside (a
deferred sensor on a batch made outside Airflow).
mka1_distributed_workers: sync_wait (waits on its worker) -> download_sync; upload (uploads, then defers)
-> download_upload.
mka1_distributed_handover: 4 mapped deferred batch tasks, for a triggerer that freezes and comes back.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_batches.operators.mka1 import MKA1BatchOperator, MKA1DownloadFileOperator
from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

BATCHES = 20
HANDOVER_BATCHES = 4
WAIT = {"poll_interval": 2, "max_poll_interval": 10, "timeout": 1800}
DEFAULTS = {"retries": 2, "retry_delay": timedelta(seconds=2)}


def write_requests(path: Path, lines: int, tag: str) -> None:
    """``lines`` chat-completion requests, custom ids ``<tag>-<n>``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for n in range(lines):
            body = {"model": "mka1-small", "messages": [{"role": "user", "content": f"{tag}: {n} squared?"}]}
            line = {"custom_id": f"{tag}-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            f.write(json.dumps(line) + "\n")


with DAG(
    dag_id="mka1_distributed_fanout",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": "", "lines": 240, "outside_batch_id": ""},
    default_args=DEFAULTS,
    max_active_tasks=64,
):

    @task
    def write_inputs(params: dict | None = None) -> list[str]:
        assert params is not None
        paths = [Path(params["workdir"]) / "inputs" / f"{i:02d}.jsonl" for i in range(BATCHES)]
        for i, path in enumerate(paths):
            write_requests(path, int(params["lines"]), f"b{i:02d}")
        return [str(p) for p in paths]

    batches = MKA1BatchOperator.partial(
        task_id="batch", deferrable=True, metadata={"scenario": "fanout"}, **WAIT
    ).expand(input_path=write_inputs())
    MKA1DownloadFileOperator.partial(
        task_id="download", destination="{{ params.workdir }}/results/{{ ti.map_index }}.jsonl"
    ).expand(file_id=batches.output)
    MKA1BatchSensor(
        task_id="outside",
        batch_id="{{ params.outside_batch_id }}",
        deferrable=True,
        poke_interval=2,
        max_poll_interval=10,
    )


with DAG(
    dag_id="mka1_distributed_workers",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": "", "sync_input_file_id": ""},
    default_args=DEFAULTS,
):
    sync_wait = MKA1BatchOperator(
        task_id="sync_wait", input_file_id="{{ params.sync_input_file_id }}", deferrable=False, **WAIT
    )
    sync_wait >> MKA1DownloadFileOperator(
        task_id="download_sync",
        file_id=sync_wait.output,
        destination="{{ params.workdir }}/results/sync.jsonl",
    )
    upload = MKA1BatchOperator(
        task_id="upload", input_path="{{ params.workdir }}/inputs/upload.jsonl", deferrable=True, **WAIT
    )
    upload >> MKA1DownloadFileOperator(
        task_id="download_upload",
        file_id=upload.output,
        destination="{{ params.workdir }}/results/upload.jsonl",
    )


with DAG(
    dag_id="mka1_distributed_handover",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": "", "lines": 240},
    # No retries: a retry after the cancel would create new batches under the later steps' counts.
    default_args={**DEFAULTS, "retries": 0},
):

    @task
    def write_handover_inputs(params: dict | None = None) -> list[str]:
        assert params is not None
        paths = [Path(params["workdir"]) / "inputs" / f"{i:02d}.jsonl" for i in range(HANDOVER_BATCHES)]
        for i, path in enumerate(paths):
            write_requests(path, int(params["lines"]), f"h{i:02d}")
        return [str(p) for p in paths]

    MKA1BatchOperator.partial(
        task_id="batch", deferrable=True, metadata={"scenario": "handover"}, **WAIT
    ).expand(input_path=write_handover_inputs())
