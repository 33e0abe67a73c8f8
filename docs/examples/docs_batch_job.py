"""
Batch jobs guide: answer a JSONL file of chat requests as an MKA1 batch job, then read
its results.

write_requests -> answer (MKA1BatchJobOperator: 3 batches, one transient failure
resubmitted) -> read_results

``workdir`` (a DAG param) is where the request file and the results go; the only other
configuration read is the ``mka1_default`` connection.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_batches.operators.mka1 import MKA1BatchJobOperator

REQUESTS = 120

with DAG(
    dag_id="docs_batch_job",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "workdir": Param(
            str(Path(tempfile.gettempdir()) / "docs_batch_job"), type="string"
        )
    },
    tags=["docs", "mka1"],
):

    @task
    def write_requests(params: dict | None = None, run_id: str | None = None) -> str:
        """One chat request per line, each with its own custom_id."""
        path = Path(params["workdir"]) / "requests.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for n in range(REQUESTS):
                # The run id makes each run's requests new to the emulator, which counts
                # failures by content.
                question = f"{n} squared? ({run_id})"
                body: dict = {
                    "model": "mka1-small",
                    "messages": [{"role": "user", "content": question}],
                }
                # The emulator fails a line whose body has "emulator_fail" (never send
                # it to the real API):
                # q-7 fails once for a transient reason, q-8 is blocked for good.
                if n == 7:
                    body["emulator_fail"] = {
                        "code": "server_error",
                        "message": "upstream busy",
                        "times": 1,
                    }
                if n == 8:
                    body["emulator_fail"] = {
                        "code": "content_filter",
                        "message": "blocked",
                    }
                line = {
                    "custom_id": f"q-{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
                f.write(json.dumps(line) + "\n")
        return str(path)

    # --8<-- [start:operator]
    answer = MKA1BatchJobOperator(
        task_id="answer",
        requests=write_requests(),  # a JSONL path, request dicts or prompts
        endpoint="/v1/chat/completions",
        result_path="{{ params.workdir }}/answers/",  # local or ObjectStoragePath
        max_requests_per_batch=50,  # 3 batches (default 50,000)
        resubmit_rounds=2,  # up to 2 more rounds for transient failures
        max_failed_ratio=0.01,  # up to 1% may end without an answer
        deferrable=True,  # one trigger per round waits on its batches
        poll_interval=2,  # seconds (default 30)
    )
    # --8<-- [end:operator]

    # --8<-- [start:read]
    @task
    def read_results(manifest: dict) -> None:
        """
        The manifest counts the rows; results.jsonl holds one row per request, in input
        order.
        """
        counts = manifest["counts"]
        assert counts["requests"] == REQUESTS
        answered_or_not = counts["succeeded"] + sum(counts["failed"].values())
        assert (
            answered_or_not + counts["invalid_output"] + counts["never_ran"]
            == counts["requests"]
        )
        assert counts["failed"] == {"content_filter": 1}  # permanent: never resubmitted
        assert counts["resubmitted"] == 1  # q-7, answered in the second round
        assert manifest["rounds"] == 2 and len(manifest["batches"][0]) == 3

        with open(manifest["results"], encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        assert [row["custom_id"] for row in rows] == [f"q-{n}" for n in range(REQUESTS)]
        assert rows[7]["error"] is None and rows[7]["attempts"] == 2
        assert (
            rows[8]["response"] is None and rows[8]["error"]["code"] == "content_filter"
        )
        assert rows[0]["response"]["choices"][0]["message"][
            "content"
        ]  # the answer's body, as the API gave it
        assert manifest["usage"]["total_tokens"] > 0  # summed over every answer

    # --8<-- [end:read]

    read_results(answer.output)
