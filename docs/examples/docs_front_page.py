"""
The front page's example: a list of questions in, one answer per question out, with
``@task.mka1_batch``.

Runs against the emulator in tests/docs (``airflow dags test docs_front_page``);
``workdir`` is where the answers go.
"""

from __future__ import annotations

# --8<-- [start:dag]
import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import dag, task  # or airflow.sdk's


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"workdir": str(Path(tempfile.gettempdir()) / "docs_front_page")},
)
def docs_front_page():
    @task.mka1_batch(
        model="mka1-small",
        system_prompt="Answer in one sentence.",
        # a local directory, or any ObjectStoragePath (s3://, gs://, ...)
        result_path="{{ params.workdir }}/answers",
        # the wait runs in the triggerer and holds no worker slot
        deferrable=True,
        # seconds between the first polls (default 30); later ones spread out
        poll_interval=5,
    )
    def ask():
        # or the path of a JSONL file of requests, or request dicts
        return [f"What is {n} squared?" for n in range(1, 101)]

    @task
    def report(manifest: dict) -> None:
        # one row per question, in input order
        with open(manifest["results"]) as rows:
            answers = [json.loads(row) for row in rows]
        assert len(answers) == manifest["counts"]["succeeded"] == 100
        print(answers[0]["response"]["choices"][0]["message"]["content"])

    report(ask())


docs_front_page()
# --8<-- [end:dag]
