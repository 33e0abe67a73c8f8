"""@task.mka1_batch in a real DAG: a generator streamed (deferred), prompt strings (on a worker), a JSONL
path, a mapped task (one job per partition), the results as an asset, and a DAG scheduled on that asset.
Each function call appends a line to <workdir>/calls.txt, so a test can count them."""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, task

RESULTS = Asset("mka1://tests/taskflow-results")
START = pendulum.datetime(2026, 1, 1, tz="UTC")
WORKDIR = "{{ params.workdir }}"


def _called(workdir: str, what: str) -> None:
    with open(Path(workdir) / "calls.txt", "a") as f:
        f.write(what + "\n")


with DAG("mka1_batch_taskflow", schedule=None, start_date=START, catchup=False, params={"workdir": ""}):

    @task.mka1_batch(
        endpoint="/v1/chat/completions",
        result_path=WORKDIR + "/generated",
        deferrable=True,
        poll_interval=0.5,
        results_asset=RESULTS,
    )
    def generated(params=None):
        _called(params["workdir"], "generated")
        for n in range(30):  # streamed line by line to the requests file
            yield {
                "custom_id": f"g-{n}",
                "body": {"model": "mka1-small", "messages": [{"role": "user", "content": f"q{n}"}]},
            }

    @task.mka1_batch(
        model="mka1-small", result_path=WORKDIR + "/prompts", deferrable=False, poll_interval=0.5
    )
    def prompts(params=None):
        _called(params["workdir"], "prompts")
        return [f"What is {n} squared?" for n in range(5)]

    @task
    def write_file(params=None) -> str:
        path = Path(params["workdir"]) / "given.jsonl"
        lines = [
            {
                "custom_id": f"f-{n}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "mka1-embed", "input": f"doc {n}"},
            }
            for n in range(4)
        ]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return str(path)

    @task.mka1_batch(endpoint="/v1/embeddings", result_path=WORKDIR + "/file", poll_interval=0.5)
    def from_file(path: str, params=None):
        _called(params["workdir"], "from_file")
        return path

    @task.mka1_batch(
        model="mka1-small",
        result_path=WORKDIR + "/mapped/{{ ti.map_index }}",
        deferrable=True,
        poll_interval=0.5,
    )
    def partition(part: int, params=None):
        _called(params["workdir"], f"partition-{part}")
        return [f"partition {part} question {n}" for n in range(3)]

    generated()
    prompts()
    from_file(write_file())
    partition.expand(part=[0, 1])


with DAG("mka1_results_consumer", schedule=[RESULTS], start_date=START, catchup=False):

    @task
    def read_results(triggering_asset_events=None) -> None:
        print(triggering_asset_events)

    read_results()
