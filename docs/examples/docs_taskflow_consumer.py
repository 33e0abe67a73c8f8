"""A DAG scheduled on the results of docs_taskflow: each event says where they are."""

from __future__ import annotations

import json

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, ObjectStoragePath, task

ANSWERS = Asset("mka1://docs/nightly-answers")  # the asset docs_taskflow's job emits

with DAG(
    dag_id="docs_taskflow_consumer",
    schedule=[ANSWERS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
):

    @task
    def load(**context) -> int:
        # The events that scheduled this run, by asset (only ANSWERS here).
        triggering = context.get("triggering_asset_events")  # Airflow 3
        if triggering is None:
            triggering = context.get("triggering_dataset_events", {})  # Airflow 2
        answered = 0
        for events in triggering.values():
            for event in events:
                # extra: the manifest's counts, the URIs of the results and the manifest
                results = ObjectStoragePath(event.extra["results"])
                rows = [json.loads(line) for line in results.read_text().splitlines()]
                assert len(rows) == event.extra["counts"]["requests"]
                answered += event.extra["counts"]["succeeded"]
        return answered

    load()
