"""
The quick start: write a file of requests, submit it as one batch, wait for the batch,
fetch the answers.

make_requests -> submit (upload + create) -> wait (sensor, deferred) -> fetch
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_batches.operators.mka1 import (
    MKA1BatchOperator,
    MKA1DownloadFileOperator,
)
from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

WORKDIR = str(Path(tempfile.gettempdir()) / "docs_quickstart")

with DAG(
    dag_id="docs_quickstart",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": Param(WORKDIR, type="string")},
):

    @task
    def make_requests(ds: str | None = None, params: dict | None = None) -> str:
        """One chat request per line, with the custom_id its answer will carry."""
        path = Path(params["workdir"]) / "requests" / f"{ds}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for n in range(1, 21):
                question = {"role": "user", "content": f"What is {n} squared?"}
                line = {
                    "custom_id": f"q-{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "mka1-small", "messages": [question]},
                }
                f.write(json.dumps(line) + "\n")
        return str(path)

    # Upload the file and create the batch; the batch_id XCom is pushed.
    submit = MKA1BatchOperator(
        task_id="submit",
        input_path=make_requests(),
        endpoint="/v1/chat/completions",
        metadata={"dag": "docs_quickstart", "ds": "{{ ds }}"},
        wait_for_completion=False,
    )

    # Wait in the triggerer (no worker slot held) until the batch is finished.
    wait = MKA1BatchSensor(
        task_id="wait",
        batch_id="{{ ti.xcom_pull(task_ids='submit', key='batch_id') }}",
        deferrable=True,
        poke_interval=2,  # the shortest time between polls; 60 suits a real batch
        timeout=26 * 3600,  # a batch has 24 h to finish
        max_failed_ratio=0.01,  # up to 1% of the requests may fail
    )

    # Stream the answers to a file (or object storage: s3://...).
    fetch = MKA1DownloadFileOperator(
        task_id="fetch",
        file_id="{{ ti.xcom_pull(task_ids='wait')['output_file_id'] }}",
        destination="{{ params.workdir }}/results/{{ ds }}.jsonl",
    )

    submit >> wait >> fetch
