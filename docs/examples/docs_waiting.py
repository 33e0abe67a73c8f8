"""
The three ways to wait on a batch, side by side, on one file of requests:

make_requests -> deferred (operator, waits in the triggerer) -> download
              -> submit (no wait) -> rescheduled (sensor, reschedule mode)
              -> on_worker (operator, waits on a worker)
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_batches.operators.mka1 import (
    MKA1BatchOperator,
    MKA1DownloadFileOperator,
)
from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

WORKDIR = str(Path(tempfile.gettempdir()) / "docs_waiting")

with DAG(
    dag_id="docs_waiting",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": Param(WORKDIR, type="string")},
):

    @task
    def make_requests(params: dict | None = None) -> str:
        path = Path(params["workdir"]) / "requests.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for n in range(1, 31):
                question = {"role": "user", "content": f"Name a prime over {n}."}
                line = {
                    "custom_id": f"q-{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "mka1-small", "messages": [question]},
                }
                f.write(json.dumps(line) + "\n")
        return str(path)

    requests_file = make_requests()

    # --8<-- [start:deferred]
    deferred = MKA1BatchOperator(
        task_id="deferred",
        # or input_file_id= (uploaded already), or batch_id= (attach to a batch)
        input_path=requests_file,
        endpoint="/v1/chat/completions",
        metadata={"project": "eval-nightly"},
        deferrable=True,  # the wait runs in the triggerer
        poll_interval=2,  # the shortest time between polls (default 30 s)
        max_poll_interval=timedelta(minutes=5),  # the longest (the default)
        max_failed_ratio=0.01,  # up to 1% of the requests may fail
    )
    # --8<-- [end:deferred]

    # --8<-- [start:download]
    download = MKA1DownloadFileOperator(
        task_id="download",
        file_id=deferred.output,  # the batch's output_file_id
        # a local path, or an ObjectStoragePath such as s3://bucket/results.jsonl
        destination="{{ params.workdir }}/results.jsonl",
        # a batch whose every request failed has no output file: skip, not fail
        skip_if_no_file=True,
    )
    # --8<-- [end:download]

    submit = MKA1BatchOperator(
        task_id="submit",
        input_path=requests_file,
        wait_for_completion=False,  # ends once the batch exists (XCom batch_id)
    )

    # --8<-- [start:sensor]
    rescheduled = MKA1BatchSensor(
        task_id="rescheduled",
        batch_id="{{ ti.xcom_pull(task_ids='submit', key='batch_id') }}",
        mode="reschedule",  # the worker slot is free between pokes
        poke_interval=2,  # seconds between pokes (Airflow's default: 60)
        timeout=26 * 3600,
    )
    # --8<-- [end:sensor]
    submit >> rescheduled

    # --8<-- [start:on_worker]
    on_worker = MKA1BatchOperator(
        task_id="on_worker",
        input_path=requests_file,
        deferrable=False,  # sleeps between polls, holding its worker slot
        poll_interval=2,
        # fails the try; the retry reattaches to the same batch and waits again
        timeout=timedelta(hours=2),
        retries=1,
    )
    # --8<-- [end:on_worker]

    deferred >> download
