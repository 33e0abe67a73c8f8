"""
The hook guide: every synchronous call of MKA1Hook once, in the order a batch goes
through them.

Run it with the ``mka1_default`` connection set (``AIRFLOW_CONN_MKA1_DEFAULT``); it
writes only in a temporary directory, and asserts what each call returns.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path

from airflow_provider_batches.hooks.mka1 import MKA1Hook


def main(workdir: Path) -> None:
    requests = workdir / "requests.jsonl"
    with requests.open("w", encoding="utf-8") as f:
        for n in range(5):
            body = {
                "model": "mka1-small",
                "messages": [{"role": "user", "content": f"What is {n} + {n}?"}],
            }
            f.write(
                json.dumps(
                    {
                        "custom_id": f"q-{n}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
            )
            f.write("\n")
    key = f"docs-hook-{uuid.uuid4().hex}"  # in a task: idempotency_key_for(context)

    # --8<-- [start:connect]
    hook = MKA1Hook()  # mka1_conn_id="mka1_default"
    ok, message = hook.test_connection()  # one GET /batches?limit=1; creates nothing
    assert ok, message
    # --8<-- [end:connect]

    # --8<-- [start:submit]
    options = MKA1Hook.batch_options(
        "/v1/chat/completions", metadata={"team": "search"}
    )
    assert options == {
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"team": "search"},
    }

    # Upload the file and create the batch; the key is stored in the batch's metadata.
    batch = hook.submit_batch(
        "/v1/chat/completions",
        input_path=requests,
        metadata={"team": "search"},
        idempotency_key=key,
    )
    # The same call again (a retry of the task): the same batch, found before anything
    # is uploaded.
    assert (
        hook.submit_batch(
            "/v1/chat/completions", input_path=requests, idempotency_key=key
        ).id
        == batch.id
    )
    assert hook.find_batch(key).id == batch.id
    assert hook.find_reattachable(key, endpoint="/v1/chat/completions").id == batch.id

    # The same in two steps: upload, then create from the file's id.
    uploaded = hook.upload_file(requests, purpose="batch")  # streamed, never read whole
    assert hook.get_file(uploaded.id).bytes == requests.stat().st_size
    second = hook.create_batch(
        uploaded.id, "/v1/chat/completions", idempotency_key=f"{key}-2"
    )
    assert (
        hook.create_batch(
            uploaded.id, "/v1/chat/completions", idempotency_key=f"{key}-2"
        ).id
        == second.id
    )
    # --8<-- [end:submit]

    # --8<-- [start:wait]
    # in a DAG, let a sensor, a trigger or an operator do this
    while not batch.is_terminal:
        time.sleep(1)
        batch = hook.get_batch(batch.id)
    assert batch.status == "completed", batch.status
    # newest first
    assert any(b.id == batch.id for b in hook.list_batches(page_size=100))
    # --8<-- [end:wait]

    # --8<-- [start:results]
    answers = {line.custom_id: line for line in hook.iter_results(batch.output_file_id)}
    assert sorted(answers) == [f"q-{n}" for n in range(5)] and all(
        line.ok for line in answers.values()
    )

    downloaded = hook.download_file(batch.output_file_id, workdir / "answers.jsonl")
    assert (downloaded.path, downloaded.lines) == (str(workdir / "answers.jsonl"), 5)
    assert downloaded.bytes == (workdir / "answers.jsonl").stat().st_size

    assert any(
        f.id == uploaded.id for f in hook.list_files(purpose="batch", order="desc")
    )
    # --8<-- [end:results]

    # --8<-- [start:cancel]
    # no key: always a new batch
    other = hook.create_batch(uploaded.id, "/v1/chat/completions")
    cancelled = hook.cancel_batch(other.id)
    assert cancelled.status in ("cancelling", "cancelled")
    assert hook.cancel_batch(other.id).id == other.id  # a second cancel is not an error
    assert hook.delete_file(uploaded.id).deleted
    hook.close()  # or: with MKA1Hook() as hook: ...
    # --8<-- [end:cancel]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
