"""
The lineage guide: a batch job that updates an Asset, and a task that reads the asset
event's ``extra``.

answer (MKA1BatchJobOperator, results_asset) -> latest_results (inlets: the asset)

``workdir`` (a DAG param) is where the results go; the only other configuration read is
the ``mka1_default`` connection.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, Param, task

from airflow_provider_batches.operators.mka1 import MKA1BatchJobOperator

# --8<-- [start:asset]
# a Dataset on Airflow 2; the URI names it, nothing is read from it
ANSWERS = Asset("s3://my-bucket/answers")
# --8<-- [end:asset]

with DAG(
    dag_id="docs_lineage",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "workdir": Param(
            str(Path(tempfile.gettempdir()) / "docs_lineage"), type="string"
        )
    },
    tags=["docs", "mka1"],
):
    # --8<-- [start:producer]
    answer = MKA1BatchJobOperator(
        task_id="answer",
        requests=["Summarise: the sky is blue.", "Summarise: water is wet."],
        model="mka1-small",
        result_path="{{ params.workdir }}/answers/",
        # added to outlets; the event's extra: counts, results, manifest
        results_asset=ANSWERS,
        deferrable=True,
        poll_interval=2,
    )
    # --8<-- [end:producer]

    # --8<-- [start:reader]
    @task(inlets=[ANSWERS])
    def latest_results(inlet_events=None) -> None:
        extra = inlet_events[ANSWERS][-1].extra  # the newest event of the asset
        assert extra["counts"]["succeeded"] == extra["counts"]["requests"] == 2
        with open(extra["results"], encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        assert [row["custom_id"] for row in rows] == ["prompt-0", "prompt-1"]
        with open(extra["manifest"], encoding="utf-8") as f:
            assert json.load(f)["counts"] == extra["counts"]

    # --8<-- [end:reader]

    answer >> latest_results()
