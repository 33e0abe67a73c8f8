"""
``python -m benchmarks``: run every benchmark and print one table (``make bench``).

Each benchmark runs as ``python -m benchmarks.<name> --json`` in its own process, with the emulator in yet
another process; a benchmark that fails shows as a failed row and the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks._common import REPO, Row, load_rows, table

# (module, arguments): what `make bench` runs, sized to finish in about 20 minutes on 2 cores.
SUITE: list[tuple[str, list[str]]] = [
    ("benchmarks.parse_cost", ["--samples", "7"]),
    ("benchmarks.api_calls", ["--runs", "5"]),
    ("benchmarks.download", ["--size-mib", "1024", "--rounds", "5"]),
    # The openai trigger runs at 1,000 (the largest N it runs in a reasonable time), ours and the bare
    # aiohttp poller at 1,000 and 5,000.
    ("benchmarks.triggerer", ["--n", "1000", "5000", "--cap", "150"]),
    # A job of 100,000 and 1,000,000 chat requests (27 and 270 MB), and 100,000 with 1% failing once.
    ("benchmarks.batch_job", ["--requests", "100000", "1000000", "--transient-requests", "100000"]),
    # A fleet of waits on one rate-limited key (about 11 minutes: 5,000 waits at 20 req/s take 250 s).
    ("benchmarks.fleet", []),
    # What one waiting trigger costs: RSS and objects a full garbage collection walks.
    ("benchmarks.per_trigger", ["--n", "2000"]),
]


def _emulator_memory_rows(stdout: str) -> list[Row]:
    """The emulator helper's own benchmark prints text; its peak-RSS line becomes a row."""
    m = re.search(r"after serving it: ([\d.]+) MiB \(limit ([\d.]+)\)", stdout)
    if m is None:
        return []
    peak, limit = float(m.group(1)), float(m.group(2))
    return [
        Row("emulator memory", "emulator peak RSS, 1 GiB up + down", "MiB", peak, None, "",
            f"< {limit:.0f} MiB", peak < limit, "the emulator's own figure (benchmarks/emulator_memory.py)")
    ]  # fmt: skip


# Benchmarks that print their own text rather than rows: (module, arguments, parser of their output).
OPTIONAL: list[tuple[str, list[str], Callable[[str], list[Row]]]] = [
    ("benchmarks.emulator_memory", [], _emulator_memory_rows)
]


def _run(module: str, args: list[str], parse: Callable[[str], list[Row]] = load_rows) -> list[Row]:
    started = time.monotonic()
    print(f"== {module} {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        check=False,
    )
    print(f"== {module}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    rows = parse(proc.stdout)
    if not rows:
        return [Row(module.rsplit(".", 1)[-1], "FAILED", "", None, note=f"exit code {proc.returncode}")]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[1])
    parser.add_argument("--only", nargs="+", help="run only these benchmarks (e.g. triggerer download)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    suite: list[tuple[str, list[str], Callable[[str], list[Row]]]] = [
        (m, [*a, "--json"], load_rows) for m, a in SUITE
    ]
    suite += [entry for entry in OPTIONAL if os.path.exists(os.path.join(REPO, *entry[0].split(".")) + ".py")]
    rows: list[Row] = []
    for module, module_args, parse in suite:
        if args.only and module.rsplit(".", 1)[-1] not in args.only:
            continue
        rows += _run(module, module_args, parse)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False
    ).stdout.strip()
    print()
    print(
        f"MKA1 provider benchmarks, {datetime.date.today().isoformat()}, commit {commit or '?'}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print()
    print(table(rows))
    # A missed target is a finding, printed above; only a benchmark that could not run fails the command.
    return 1 if any(r.metric == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
