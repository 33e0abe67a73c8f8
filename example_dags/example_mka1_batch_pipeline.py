"""
The whole MKA1 batch pipeline: write requests, submit them as one batch, wait deferred, fetch the results.

make_requests -> batch (upload + create + wait in the triggerer) -> download -> summarize

The only outside configuration it reads is the ``mka1_default`` connection. ``workdir`` (a DAG param) is
where the request and result files go.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.operators.mka1 import MKA1BatchOperator, MKA1DownloadFileOperator

QUESTIONS = 60
# The emulator fails a request whose body carries "emulator_fail": these lines stand in for the few
# requests of a real batch that fail (a bad prompt, a content filter). Never send this key to the real API.
LINES_TO_FAIL = {7, 23, 41}

with DAG(
    dag_id="example_mka1_batch_pipeline",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"workdir": str(Path(tempfile.gettempdir()) / "mka1_example_pipeline")},
    tags=["example", "mka1"],
) as dag:

    @task
    def make_requests(params: dict | None = None) -> str:
        """Write one chat-completion request per question, keyed by custom_id."""
        workdir = Path(params["workdir"])
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "requests.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for n in range(1, QUESTIONS + 1):
                body: dict = {
                    "model": "mka1-small",
                    "messages": [{"role": "user", "content": f"What is {n} squared?"}],
                }
                if n in LINES_TO_FAIL:
                    body["emulator_fail"] = True
                request = {"custom_id": f"q-{n}", "method": "POST", "url": "/v1/chat/completions"}
                f.write(json.dumps({**request, "body": body}) + "\n")
        return str(path)

    requests_path = make_requests()

    batch = MKA1BatchOperator(
        task_id="batch",
        input_path=requests_path,
        endpoint="/v1/chat/completions",
        metadata={"pipeline": "example_mka1_batch_pipeline"},
        deferrable=True,
        # Poll at least every 5 s (the default is 30 s; the wait stretches toward max_poll_interval as the
        # batch's progress shows how long it has left).
        poll_interval=5,
        # A few failed requests are expected; more than 10% fails the task.
        max_failed_ratio=0.1,
    )

    download = MKA1DownloadFileOperator(
        task_id="download",
        file_id=batch.output,
        destination="{{ params.workdir }}/results.jsonl",
    )

    @task
    def summarize(requests_file: str, downloaded: dict, ti=None) -> dict:
        """Match every request to its answer or its error by custom_id and print a short summary."""
        error_file_id = ti.xcom_pull(task_ids="batch", key="error_file_id")
        with open(requests_file, encoding="utf-8") as f:
            asked = {json.loads(line)["custom_id"] for line in f if line.strip()}
        answered: dict[str, str] = {}
        with open(downloaded["path"], encoding="utf-8") as f:
            for line in f:
                result = json.loads(line)
                choice = result["response"]["body"]["choices"][0]
                answered[result["custom_id"]] = choice["message"]["content"]
        failed = {}
        if error_file_id:
            failed = {r.custom_id: r.error.message for r in MKA1Hook().iter_results(error_file_id) if r.error}
        summary = {
            "asked": len(asked),
            "answered": len(answered),
            "failed": sorted(failed),
            "missing": sorted(asked - answered.keys() - failed.keys()),
            "results_file": downloaded["path"],
        }
        summary_path = Path(downloaded["path"]).with_name("summary.json")
        summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        print(f"MKA1 batch summary: {json.dumps(summary)}")
        return summary

    summarize(requests_path, download.output)
