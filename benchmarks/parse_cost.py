"""
DAG parse cost: what importing our operator, sensor and hook modules adds to a fresh interpreter.

Each sample is a fresh ``python`` process that first imports what every DAG file's interpreter already has
from Airflow's task SDK (``DAG``, ``BaseOperator``, ``BaseSensorOperator``, ``BaseHook``: ``airflow.sdk`` on
its own is a lazy module that loads none of them), then times the import of the modules under test with
``time.perf_counter``. Ours and the openai provider's operator alternate; the figure is the
median over the samples.

    python -m benchmarks.parse_cost --samples 7
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from benchmarks._common import REPO, Row, arg_parser, bench_env, report

OURS = (
    "airflow_provider_batches.operators.mka1",
    "airflow_provider_batches.sensors.mka1",
    "airflow_provider_batches.hooks.mka1",
)
OPENAI = ("airflow.providers.openai.operators.openai",)

_PROBE = """
import sys, time, importlib
try:
    from airflow.sdk import DAG, BaseHook, BaseOperator, BaseSensorOperator
except ImportError:
    from airflow.hooks.base import BaseHook
    from airflow.models import DAG, BaseOperator
    from airflow.sensors.base import BaseSensorOperator
t = time.perf_counter()
for name in sys.argv[1:]:
    importlib.import_module(name)
print(time.perf_counter() - t)
"""


def _with_bytecode_cache(env: dict[str, str]) -> dict[str, str]:
    # An installed package is byte-compiled; an editable checkout under PYTHONDONTWRITEBYTECODE would be
    # compiled from source at every import, which no DAG processor pays. The warm-up writes the cache.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def sample(modules: tuple[str, ...]) -> float:
    """Seconds one fresh interpreter (with the SDK already imported) spends importing ``modules``."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        env=_with_bytecode_cache(bench_env()),
        cwd=REPO,
        check=True,
        timeout=120,
    )
    return float(out.stdout.strip().splitlines()[-1])


def measure(samples: int) -> dict[str, list[float]]:
    sample(OURS)  # warm the bytecode caches and the disk cache once, for both
    sample(OPENAI)
    ours, other = [], []
    for _ in range(samples):
        ours.append(sample(OURS))
        other.append(sample(OPENAI))
    return {"ours": ours, "openai": other}


def rows(result: dict[str, list[float]]) -> list[Row]:
    ours = statistics.median(result["ours"]) * 1e3
    other = statistics.median(result["openai"]) * 1e3
    note = f"median of {len(result['ours'])} fresh interpreters each; ours = {', '.join(OURS)}"
    return [
        Row(
            "DAG parse cost",
            "import time added",
            "ms",
            ours,
            other,
            "openai operator",
            "< 30 ms",
            ours < 30,
            note,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser("benchmarks.parse_cost", __doc__)
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args(argv)
    result = measure(args.samples)
    print(json.dumps(result), file=sys.stderr)
    report(rows(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
