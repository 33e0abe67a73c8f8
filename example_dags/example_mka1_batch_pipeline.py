"""
The whole MKA1 batch pipeline: write requests, submit them as one batch, wait deferred, fetch the results.

make_requests -> batch (upload + create + wait in the triggerer) -> download -> summarize

The only outside configuration it reads is the ``mka1_default`` connection. ``workdir`` (a DAG param) is
where the request and result files go.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.operators.mka1 import MKA1BatchOperator, MKA1DownloadFileOperator

QUESTIONS = 60
# The emulator fails a request whose body carries "emulator_fail": these lines stand in for the few
# requests of a real batch that fail (a bad prompt, a content filter). Never send this key to the real API.
LINES_TO_FAIL = {7, 23, 41}


def natural_order(custom_id: str) -> list[str | int]:
    """Sort key that puts q-7 before q-23: runs of digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", custom_id)]


with DAG(
    dag_id="example_mka1_batch_pipeline",
    description="Write 60 chat requests, run them as one MKA1 batch (waiting in the triggerer), fetch and "
    "summarise the answers.",
    doc_md="""
### MKA1 batch pipeline

`make_requests` writes one chat-completion request per question to `requests.jsonl` in **workdir**.
`batch` uploads the file, creates the batch and **defers**: the wait runs in the triggerer and holds no
worker slot; its log shows the batch's progress (share done, failed so far, rate, time left).
`download` fetches the output file (the `batch` task's `return_value` XCom is its `output_file_id`), and
`summarize` matches each answer or error to its request by `custom_id`.

Needs the `mka1_default` connection (type **MKA1**: Base URL and API key). Against the provider's emulator
(`python -m airflow_provider_batches.emulator --api-key demo-key`) three requests fail on purpose, within
the task's `max_failed_ratio` of 10%.
""",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "workdir": Param(
            str(Path(tempfile.gettempdir()) / "mka1_example_pipeline"),
            type="string",
            title="Work directory",
            description="Where requests.jsonl, results.jsonl and summary.json are written (created if "
            "missing; on a machine every task of the run can read).",
        )
    },
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
        # The shortest time between two polls: every 5 s while the batch validates or finalizes (the
        # default is 30 s); while its lines run, the polls spread out toward max_poll_interval (300 s by
        # default) to land about when the batch's progress says the lines will be done.
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
            "failed": sorted(failed, key=natural_order),
            "missing": sorted(asked - answered.keys() - failed.keys(), key=natural_order),
            "results_file": downloaded["path"],
        }
        summary_path = Path(downloaded["path"]).with_name("summary.json")
        summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        print(f"MKA1 batch summary: {json.dumps(summary)}")
        return summary

    summarize(requests_path, download.output)
