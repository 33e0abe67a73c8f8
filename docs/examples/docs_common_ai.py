"""
The common-ai guide: common-ai's LLMBatchOperator running its batch on MKA1
(``model_id="mka1:..."``).

answers (LLMBatchOperator, deferred) -> check_answers

Needs the ``[common-ai]`` extra. ``workdir`` (a DAG param) is where the results go; the
only other configuration read is the ``mka1_default`` connection. common-ai polls no
faster than every 30 s, so this DAG takes about half a minute.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator
from airflow.providers.common.compat.sdk import DAG, Param, task

with DAG(
    dag_id="docs_common_ai",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "workdir": Param(
            str(Path(tempfile.gettempdir()) / "docs_common_ai"), type="string"
        )
    },
    tags=["docs", "mka1"],
):
    # --8<-- [start:operator]
    answers = LLMBatchOperator(
        task_id="answers",
        requests=["What is 2 + 2?", "Name a prime above 100."],
        system_prompt="Answer briefly.",
        model_id="mka1:mka1-small",  # "mka1:" and the model the requests ask for
        # an mka1 connection (or a pydanticai one whose host is the MKA1 URL)
        llm_conn_id="mka1_default",
        # or s3://my-bucket/answers/{{ ds }}
        result_path="file://{{ params.workdir }}/answers",
        deferrable=True,
        poll_interval=30,  # common-ai's minimum (its default is 60)
    )
    # --8<-- [end:operator]

    # --8<-- [start:check]
    @task
    def check_answers(manifest: dict) -> None:
        """common-ai's manifest: its counts, and where its results file is."""
        assert manifest["adapter"] == "mka1" and manifest["batch_id"].startswith(
            "batch"
        )
        assert (
            manifest["counts"]["succeeded"] == 2 and manifest["counts"]["errored"] == 0
        )
        with open(
            manifest["result_uri"].removeprefix("file://"), encoding="utf-8"
        ) as f:
            rows = [json.loads(line) for line in f]
        assert sorted(row["index"] for row in rows) == [0, 1]
        assert all(row["status"] == "success" and row["output"] for row in rows)

    # --8<-- [end:check]

    check_answers(answers.output)
