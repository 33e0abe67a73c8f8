"""
Batch jobs guide: prompt strings with a ``response_model``; every answer parsed into a
pydantic model.

classify (MKA1BatchJobOperator, prompt strings) -> check_sentiments

``workdir`` (a DAG param) is where the results go; the only other configuration read is
the ``mka1_default`` connection.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task
from pydantic import BaseModel

from airflow_provider_batches.operators.mka1 import MKA1BatchJobOperator

REVIEWS = ["I love it", "It broke on day two", "Fine, I guess"]

with DAG(
    dag_id="docs_batch_job_structured",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "workdir": Param(
            str(Path(tempfile.gettempdir()) / "docs_batch_job_structured"),
            type="string",
        )
    },
    tags=["docs", "mka1"],
):
    # --8<-- [start:classify]
    class Sentiment(BaseModel):
        label: str
        confidence: float

    classify = MKA1BatchJobOperator(
        task_id="classify",
        # prompt strings: custom_ids prompt-0, prompt-1, ... by position
        requests=REVIEWS,
        model="mka1-small",  # the model every prompt is sent to
        system_prompt="Classify the sentiment of the review.",
        request_params={"temperature": 0},  # merged into every body
        response_model=Sentiment,  # asks for its JSON schema and validates every answer
        result_path="{{ params.workdir }}/sentiment/",
        deferrable=True,
        poll_interval=2,
    )
    # --8<-- [end:classify]

    # --8<-- [start:check]
    @task
    def check_sentiments(manifest: dict) -> None:
        with open(manifest["results"], encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        assert [row["custom_id"] for row in rows] == [
            "prompt-0",
            "prompt-1",
            "prompt-2",
        ]
        for row in rows:
            # the parsed answer, as JSON
            sentiment = Sentiment.model_validate(row["output"])
            # the raw answer is kept too
            assert row["error"] is None and row["response"] is not None
            assert isinstance(sentiment.confidence, float)
        assert manifest["counts"]["invalid_output"] == 0

    # --8<-- [end:check]

    check_sentiments(classify.output)
