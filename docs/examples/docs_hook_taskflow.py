"""
The hook guide: a batch from TaskFlow tasks with MKA1Hook alone (submit, wait in a
sensor, read).

write_documents -> submit -> wait (@task.sensor, reschedule) -> count_vectors

``workdir`` (a DAG param) is where the request file goes; the only other configuration
read is the ``mka1_default`` connection.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import (
    PokeReturnValue,
    dag,
    get_current_context,
    task,
)

from airflow_provider_batches.hooks.mka1 import MKA1Hook, idempotency_key_for
from airflow_provider_batches.outcome import check_batch_outcome

DOCUMENTS = 10


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": str(Path(tempfile.gettempdir()) / "docs_hook_taskflow")},
    tags=["docs", "mka1"],
)
def docs_hook_taskflow():
    @task
    def write_documents(params: dict | None = None) -> str:
        path = Path(params["workdir"]) / "documents.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for n in range(DOCUMENTS):
                body = {"model": "mka1-embed", "input": f"document number {n}"}
                f.write(
                    json.dumps(
                        {
                            "custom_id": f"doc-{n}",
                            "method": "POST",
                            "url": "/v1/embeddings",
                            "body": body,
                        }
                    )
                )
                f.write("\n")
        return str(path)

    # --8<-- [start:tasks]
    @task(retries=2)
    def submit(path: str) -> str:
        hook = MKA1Hook()  # the mka1_default connection
        uploaded = hook.upload_file(path, purpose="batch")
        # The key makes a retry of this task reattach to the batch its first try
        # created.
        key = idempotency_key_for(get_current_context())
        return hook.create_batch(uploaded.id, "/v1/embeddings", idempotency_key=key).id

    @task.sensor(poke_interval=2, timeout=24 * 3600, mode="reschedule")
    def wait(batch_id: str) -> PokeReturnValue:
        batch = MKA1Hook().get_batch(batch_id)
        # The same outcome rule as the operators: raises for failed/expired/cancelled
        # batches.
        return PokeReturnValue(
            is_done=check_batch_outcome(batch), xcom_value=batch.output_file_id
        )

    @task
    def count_vectors(output_file_id: str) -> int:
        vectors = sum(
            1 for result in MKA1Hook().iter_results(output_file_id) if result.ok
        )
        assert vectors == DOCUMENTS
        return vectors

    count_vectors(wait(submit(write_documents())))
    # --8<-- [end:tasks]


docs_hook_taskflow()
