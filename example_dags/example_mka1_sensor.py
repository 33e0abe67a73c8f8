"""
Wait on a batch with MKA1BatchSensor in reschedule mode, then fetch its results with the hook.

make_requests -> submit (no wait) -> wait_for_batch (sensor, reschedule) -> count_answers

Reschedule mode frees the worker slot between pokes; use ``deferrable=True`` instead to hand the wait
to the triggerer. The only outside configuration it reads is the ``mka1_default`` connection.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.operators.mka1 import MKA1BatchOperator
from airflow_provider_batches.sensors.mka1 import MKA1BatchSensor

with DAG(
    dag_id="example_mka1_sensor",
    description="Submit 10 embedding requests without waiting, wait with a reschedule-mode sensor, count "
    "the vectors.",
    doc_md="""
### MKA1 sensor

`submit` uploads `embeddings.jsonl` and creates the batch without waiting (`wait_for_completion=False`);
its `batch_id` XCom is what `wait_for_batch` (an `MKA1BatchSensor` in **reschedule** mode) polls every
2 s, freeing the worker slot between pokes; each poke logs the batch's progress. The sensor's XCom is the
final batch as a dict, and `count_answers` reads its `output_file_id` with `MKA1Hook.iter_results`.

Needs the `mka1_default` connection (type **MKA1**: Base URL and API key).
""",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "workdir": Param(
            str(Path(tempfile.gettempdir()) / "mka1_example_sensor"),
            type="string",
            title="Work directory",
            description="Where embeddings.jsonl is written (created if missing).",
        )
    },
    tags=["example", "mka1"],
) as dag:

    @task
    def make_requests(params: dict | None = None) -> str:
        path = Path(params["workdir"]) / "embeddings.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = (
            {
                "custom_id": f"doc-{n}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "mka1-embed", "input": f"document number {n}"},
            }
            for n in range(1, 11)
        )
        path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        return str(path)

    submit = MKA1BatchOperator(
        task_id="submit",
        input_path=make_requests(),
        endpoint="/v1/embeddings",
        wait_for_completion=False,
    )

    wait_for_batch = MKA1BatchSensor(
        task_id="wait_for_batch",
        batch_id="{{ ti.xcom_pull(task_ids='submit', key='batch_id') }}",
        mode="reschedule",
        poke_interval=2,
        timeout=600,
    )

    @task
    def count_answers(batch: dict) -> int:
        """The sensor's XCom is the final batch: its output_file_id is the file to fetch."""
        results = MKA1Hook().iter_results(batch["output_file_id"])
        vectors = [r.response.body["data"][0]["embedding"] for r in results if r.response]
        print(f"{len(vectors)} embeddings of {len(vectors[0])} dimensions")
        return len(vectors)

    submit >> wait_for_batch
    count_answers(wait_for_batch.output)
