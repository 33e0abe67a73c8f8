"""
The hook guide: the async calls (what a trigger uses) from your own asyncio code.

Run it with the ``mka1_default`` connection set (``AIRFLOW_CONN_MKA1_DEFAULT``); it
writes only in a temporary directory, and asserts what each call returns.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from airflow_provider_batches.hooks.mka1 import MKA1Hook
from airflow_provider_batches.models import Batch


# --8<-- [start:wait]
async def wait_for_all(batch_ids: list[str]) -> list[Batch]:
    """
    Poll several batches at once, on the one aiohttp session every hook of the
    connection shares.
    """
    # leaving the block releases this hook's share of the session
    async with MKA1Hook() as hook:

        async def wait(batch_id: str) -> Batch:
            batch = await hook.aget_batch(batch_id)
            while not batch.is_terminal:
                await asyncio.sleep(1)
                batch = await hook.aget_batch(batch_id)
            return batch

        return await asyncio.gather(*(wait(batch_id) for batch_id in batch_ids))


async def cancel(batch_id: str) -> Batch:
    async with MKA1Hook() as hook:
        return await hook.acancel_batch(batch_id)


# --8<-- [end:wait]


def main(workdir: Path) -> None:
    small, large = workdir / "small.jsonl", workdir / "large.jsonl"
    for path, lines in ((small, 1), (large, 500)):
        with path.open("w", encoding="utf-8") as f:
            for n in range(lines):
                body = {"model": "mka1-embed", "input": f"text {n}"}
                f.write(
                    json.dumps(
                        {
                            "custom_id": f"e-{n}",
                            "method": "POST",
                            "url": "/v1/embeddings",
                            "body": body,
                        }
                    )
                )
                f.write("\n")
    # the sync calls: the requests session is closed on the way out
    with MKA1Hook() as hook:
        small_id, large_id = hook.upload_file(small).id, hook.upload_file(large).id
        batch_ids = [hook.create_batch(small_id, "/v1/embeddings").id for _ in range(2)]
        to_cancel = hook.create_batch(large_id, "/v1/embeddings").id

    # --8<-- [start:run]
    cancelled = asyncio.run(cancel(to_cancel))
    assert cancelled.status in ("cancelling", "cancelled")

    batches = asyncio.run(wait_for_all(batch_ids))
    assert [b.status for b in batches] == ["completed", "completed"]

    # A hook never released is closed with its event loop: no "Unclosed client session"
    # left behind.
    assert asyncio.run(MKA1Hook().aget_batch(batch_ids[0])).status == "completed"
    # --8<-- [end:run]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
