"""The front page's example: a list of questions in, one answer per question out, with ``@task.mka1_batch``.

Runs against the emulator in tests/docs (``airflow dags test docs_front_page``); ``workdir`` is where the
answers go.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

# --8<-- [start:dag]
import pendulum
from airflow.providers.common.compat.sdk import dag, task  # or: from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"workdir": str(Path(tempfile.gettempdir()) / "docs_front_page")},
)
def docs_front_page():
    @task.mka1_batch(
        model="mka1-small",
        system_prompt="Answer in one sentence.",
        result_path="{{ params.workdir }}/answers",  # a local directory or any ObjectStoragePath
        deferrable=True,  # the wait runs in the triggerer and holds no worker slot
        poll_interval=5,  # seconds between polls at first (default 30); they spread out as the batch runs
    )
    def ask():
        return [f"What is {n} squared?" for n in range(1, 101)]  # or a JSONL path, or request dicts

    @task
    def report(manifest: dict) -> None:
        with open(manifest["results"]) as rows:  # one row per question, in order
            answers = [json.loads(row) for row in rows]
        assert len(answers) == manifest["counts"]["succeeded"] == 100
        print(answers[0]["response"]["choices"][0]["message"]["content"])

    report(ask())


docs_front_page()
# --8<-- [end:dag]
