"""
A DAG for the reliability suite's leak scan: it uses the API key on every path a task can take (create
and wait deferred, download, poke, a 401 with another key, a hostile id) so that the scan of the logs,
XComs, triggers and rendered fields afterwards covers them all. Runs with the suite's own emulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_batches.operators.mka1 import MKA1BatchOperator, MKA1DownloadFileOperator
from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

with DAG(
    dag_id="mka1_reliability_leak_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": "/tmp/mka1_reliability_leak_probe", "hostile": "../batches", "batch_id": ""},
) as dag:

    @task
    def write_input(params: dict | None = None) -> str:
        path = Path(params["workdir"]) / "requests.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for n in range(5):
            body: dict = {"model": "m", "messages": [{"role": "user", "content": f"q{n}"}]}
            if n == 2:
                body["emulator_fail"] = True
            lines.append(
                {"custom_id": f"p-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            )
        path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        return str(path)

    batch = MKA1BatchOperator(
        task_id="batch",
        input_path=write_input(),
        endpoint="/v1/chat/completions",
        deferrable=True,
        poll_interval=0.2,
        max_poll_interval=0.5,
        max_failed_ratio=0.5,
    )
    download = MKA1DownloadFileOperator(
        task_id="download", file_id=batch.output, destination="{{ params.workdir }}/results.jsonl"
    )
    batch_id = "{{ ti.xcom_pull(task_ids='batch', key='batch_id') }}"
    poke = MKA1BatchSensor(
        task_id="poke", batch_id=batch_id, poke_interval=0.2, timeout=60, max_failed_ratio=0.5
    )
    wrong_key = MKA1BatchSensor(
        task_id="wrong_key", batch_id=batch_id, mka1_conn_id="mka1_wrong_key", poke_interval=0.2, timeout=30
    )
    hostile = MKA1BatchSensor(
        task_id="hostile", batch_id="{{ params.hostile }}", poke_interval=0.2, timeout=30
    )
    deferred = MKA1BatchSensor(
        task_id="deferred",
        batch_id="{{ params.batch_id }}",
        deferrable=True,
        poke_interval=0.2,
        timeout=60,
        max_failed_ratio=0.5,
    )

    batch >> [download, poke, wrong_key, hostile]
