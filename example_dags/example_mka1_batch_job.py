"""
A batch job: answer a file of questions, and classify a list of prompts into a pydantic model.

make_questions -> answer (MKA1BatchJobOperator: shards, resubmits transient failures) -> report
classify (prompt strings + response_model) -> report

The only outside configuration it reads is the ``mka1_default`` connection. ``workdir`` (a DAG param) is
where the request file and the results go.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task
from pydantic import BaseModel

from airflow_provider_batches.operators.mka1 import MKA1BatchJobOperator

QUESTIONS = 250
# The emulator fails a request whose body carries "emulator_fail": these stand in for the few requests
# of a real job that fail, once for a transient reason (resubmitted, then answered) or for good (a
# content filter). Never send this key to the real API.
FAIL_ONCE = {12, 99, 180}
BLOCKED = {42}


class Sentiment(BaseModel):
    label: str
    confidence: float


with DAG(
    dag_id="example_mka1_batch_job",
    description="Answer 250 questions as an MKA1 batch job (3 batches, transient failures resubmitted) and "
    "classify 4 reviews into a pydantic model; one results row per request.",
    doc_md="""
### MKA1 batch job

`make_questions` writes 250 chat requests to `questions.jsonl` in **workdir**. `answer`
(`MKA1BatchJobOperator`) checks every line, splits them into 3 batches of at most 100, waits on all of
them in one deferral, resubmits the 3 lines that fail transiently once, and writes
`answers/results.jsonl` (one row per question, in order) and `answers/manifest.json`. `classify` sends 4
prompt strings with a `response_model` and writes the parsed answers to `sentiment/results.jsonl`.
`report` prints what the two manifests say.

Needs the `mka1_default` connection (type **MKA1**: Base URL and API key). Against the provider's emulator
(`python -m airflow_provider_batches.emulator --api-key demo-key`) one question is blocked for good, within
the task's `max_failed_ratio` of 1%.
""",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "workdir": Param(
            str(Path(tempfile.gettempdir()) / "mka1_example_job"),
            type="string",
            title="Work directory",
            description="Where questions.jsonl and the answers/ and sentiment/ result directories are "
            "written (created if missing; on a machine every task of the run can read).",
        )
    },
    tags=["example", "mka1"],
) as dag:

    @task
    def make_questions(params: dict | None = None, run_id: str | None = None) -> str:
        """Write one chat request per question, keyed by custom_id."""
        workdir = Path(params["workdir"])
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "questions.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for n in range(QUESTIONS):
                body: dict = {
                    "model": "mka1-small",
                    "messages": [{"role": "user", "content": f"{n} squared? ({run_id})"}],
                }
                if n in FAIL_ONCE:
                    body["emulator_fail"] = {"code": "server_error", "message": "upstream busy", "times": 1}
                if n in BLOCKED:
                    body["emulator_fail"] = {"code": "content_filter", "message": "blocked"}
                f.write(
                    json.dumps(
                        {"custom_id": f"q-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                    )
                )
                f.write("\n")
        return str(path)

    answer = MKA1BatchJobOperator(
        task_id="answer",
        requests=make_questions(),
        endpoint="/v1/chat/completions",
        result_path="{{ params.workdir }}/answers/",
        max_requests_per_batch=100,  # 3 batches (the default is 50,000)
        resubmit_rounds=2,
        max_failed_ratio=0.01,  # the one blocked question is within it
        deferrable=True,
        poll_interval=2,
    )

    classify = MKA1BatchJobOperator(
        task_id="classify",
        requests=["I love it", "It broke on day two", "Fine, I guess", "Best purchase this year"],
        model="mka1-small",
        system_prompt="Classify the sentiment of the review.",
        response_model=Sentiment,
        result_path="{{ params.workdir }}/sentiment/",
        deferrable=True,
        poll_interval=2,
    )

    @task
    def report(answered: dict, classified: dict) -> dict:
        """What the manifests say; the answers themselves stay in the results files."""
        summary = {
            "answer": {k: answered[k] for k in ("results", "counts", "rounds", "usage")},
            "classify": {k: classified[k] for k in ("results", "counts", "rounds")},
        }
        print(f"MKA1 batch job summary: {json.dumps(summary)}")
        return summary

    report(answer.output, classify.output)
