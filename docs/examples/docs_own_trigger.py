"""MKA1BatchTrigger in your own deferrable operator: wait on a batch, count answers."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import (
    DAG,
    AirflowException,
    BaseOperator,
    Param,
    task,
)

from airflow_provider_batches.events import batch_from_event
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.operators.mka1 import MKA1BatchOperator
from airflow_provider_batches.outcome import check_batch_outcome
from airflow_provider_batches.triggers.mka1 import MKA1BatchTrigger


# --8<-- [start:operator]
class CountAnswersOperator(BaseOperator):
    """Waits on a batch in the triggerer, then returns how many requests it answered."""

    template_fields = ("batch_id",)

    def __init__(self, *, batch_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id

    def execute(self, context: Any) -> None:
        trigger = MKA1BatchTrigger(
            batch_id=self.batch_id,
            poll_interval=2,
            # absolute, in Unix seconds: a triggerer restart does not restart the clock
            deadline=pendulum.now("UTC").add(hours=26).timestamp(),
        )
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> int:
        if event["status"] == "timeout":
            raise AirflowException(event["message"])
        # raises the trigger's API error for an "error" event
        batch = batch_from_event(event)
        # raises for a failed, expired or cancelled batch, or too many failed requests
        check_batch_outcome(batch, max_failed_ratio=0.0)
        lines = MKA1Hook().iter_results(batch.output_file_id)
        answered = sum(1 for line in lines if line.ok)
        self.log.info("Batch %s: %d answers.", batch.id, answered)
        return answered


# --8<-- [end:operator]

WORKDIR = str(Path(tempfile.gettempdir()) / "docs_own_trigger")

with DAG(
    dag_id="docs_own_trigger",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": Param(WORKDIR, type="string")},
):

    @task
    def write_requests(params: dict | None = None) -> str:
        path = Path(params["workdir"]) / "embeddings.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            {
                "custom_id": f"doc-{n}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "mka1-embed", "input": f"document {n}"},
            }
            for n in range(1, 6)
        ]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return str(path)

    submit = MKA1BatchOperator(
        task_id="submit",
        input_path=write_requests(),
        endpoint="/v1/embeddings",
        wait_for_completion=False,
    )
    count = CountAnswersOperator(
        task_id="count",
        batch_id="{{ ti.xcom_pull(task_ids='submit', key='batch_id') }}",
    )
    submit >> count
