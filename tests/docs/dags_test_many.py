"""``airflow dags test`` of several DAGs in one process: the CLI's own code, one Airflow start-up.

    python -m tests.docs.dags_test_many <workdir-root> <dag_id> [<dag_id> ...]

Each DAG gets ``{"workdir": "<workdir-root>/<dag_id>"}`` as its conf. Between runs the output carries a
``=== <dag_id>: exit <code> ===`` line, so that a test can show each DAG's own part of it.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def main(root: Path, dag_ids: list[str]) -> int:
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    worst = 0
    for dag_id in dag_ids:
        print(f"=== {dag_id}: start ===", flush=True)
        conf = json.dumps({"workdir": str(root / dag_id)})
        try:
            args = parser.parse_args(["dags", "test", dag_id, "-c", conf])
            args.func(args)
            code = 0
        except SystemExit as stopped:  # what the CLI raises when the run failed
            code = stopped.code if isinstance(stopped.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        print(f"=== {dag_id}: exit {code} ===", flush=True)
        worst = worst or code
    return worst


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
