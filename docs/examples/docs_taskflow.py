"""
The TaskFlow decorator: a function returns the requests, @task.mka1_batch runs them as a
batch job, and the results are an asset that docs_taskflow_consumer is scheduled on.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, Param, task

# The asset's URI names the results; its events' extra says where each run's files are.
ANSWERS = Asset("mka1://docs/nightly-answers")
WORKDIR = str(Path(tempfile.gettempdir()) / "docs_taskflow")

with DAG(
    dag_id="docs_taskflow",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": Param(WORKDIR, type="string")},
):

    @task.mka1_batch(
        model="mka1-small",  # prompt strings need a model
        system_prompt="Answer briefly.",
        result_path="{{ params.workdir }}/answers/{{ ds }}",
        deferrable=True,
        poll_interval=2,  # the shortest time between polls (default 30 s)
        results_asset=ANSWERS,
    )
    def questions(ds: str | None = None):
        # Read your rows here: a generator is streamed to the input file, never held
        # whole in memory.
        for n in range(1, 51):
            yield f"On {ds}, summarise fact number {n} in one line."

    questions()  # its XCom is the job's manifest
