"""common-ai's LLMBatchOperator on MKA1 (model_id "mka1:..."), waiting on a worker and deferred."""

from __future__ import annotations

import pendulum
from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator
from airflow.providers.common.compat.sdk import DAG

PROMPTS = [f"What is {n} + {n}?" for n in range(8)]

for mode, deferrable in (("sync", False), ("deferred", True)):
    with DAG(
        dag_id=f"mka1_llm_batch_{mode}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params={"result_path": ""},
    ):
        LLMBatchOperator(
            task_id="answer",
            requests=PROMPTS,
            system_prompt="Answer briefly.",
            result_path="{{ params.result_path }}",
            llm_conn_id="mka1_default",
            model_id="mka1:mka1-small",
            poll_interval=30,
            deferrable=deferrable,
        )
