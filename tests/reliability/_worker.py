"""A task run in its own process, so that a test can SIGKILL it mid-call, as a worker dies.

    python -m tests.reliability._worker create <run_id> <input_file_id>
    python -m tests.reliability._worker download <file_id> <destination> [slow]

The connection comes from AIRFLOW_CONN_MKA1_DEFAULT. ``slow`` makes each 1 MiB chunk written to the
destination's temporary file take 0.3 s (and prints "chunk" when one is written), so that the test can
kill the process half-way through a download; the download code itself is the hook's, unchanged.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    from tests.reliability.support import FakeTI, make_context

    what = argv[0]
    if what == "create":
        from airflow_provider_batches.operators.mka1 import MKA1BatchOperator

        run_id, input_file_id = argv[1], argv[2]
        ti = FakeTI(task_id="batch", run_id=run_id)
        op = MKA1BatchOperator(
            task_id="batch",
            input_file_id=input_file_id,
            endpoint="/v1/chat/completions",
            wait_for_completion=False,
        )
        op.execute(make_context(ti))
        sys.stdout.write(json.dumps({"batch_id": ti.xcom["batch_id"]}) + "\n")
    elif what == "download":
        from airflow_provider_batches import files
        from airflow_provider_batches.operators.mka1 import MKA1DownloadFileOperator

        file_id, destination = argv[1], argv[2]
        if argv[3:] == ["slow"]:
            write = files.LocalSink.write

            def slow_write(self, chunk: bytes) -> None:
                write(self, chunk)
                sys.stdout.write("chunk\n")
                sys.stdout.flush()
                time.sleep(0.3)

            files.LocalSink.write = slow_write  # type: ignore[method-assign]
        op = MKA1DownloadFileOperator(task_id="download", file_id=file_id, destination=destination)
        result = op.execute(make_context(FakeTI(task_id="download")))
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        raise SystemExit(f"unknown command {what!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
