"""``python -m airflow_provider_batches.emulator``: run the MKA1 emulator until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from airflow_provider_batches.emulator.settings import EmulatorSettings


def _parser() -> argparse.ArgumentParser:
    defaults = EmulatorSettings()
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_batches.emulator",
        description="A local emulator of the MKA1 Batch and Files API (under /api/v1/llm).",
    )
    p.add_argument("--host", default=defaults.host, help="interface to listen on (default: %(default)s)")
    p.add_argument(
        "--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: %(default)s)"
    )
    p.add_argument(
        "--api-key", action="append", required=True, dest="api_keys", help="an accepted key (repeatable)"
    )
    p.add_argument("--data-dir", help="keep state here (default: a temporary directory, removed on exit)")
    timings = p.add_argument_group("timing (seconds of the emulator clock)")
    for name, help_text in (
        ("validation_seconds", "how long a batch stays validating"),
        ("lines_per_second", "how fast a batch works through its lines"),
        ("finalizing_seconds", "how long a batch stays finalizing (and cancelling)"),
        ("completion_window_seconds", "the real length of the 24h window"),
        ("time_scale", "how many times faster than real time the emulator clock runs"),
        ("latency", "real seconds added to every API call"),
    ):
        flag = "--" + name.replace("_", "-")
        timings.add_argument(
            flag, type=float, default=getattr(defaults, name), help=f"{help_text} (default: %(default)s)"
        )
    timings.add_argument(
        "--rate-limit", type=float, default=None, help="API calls per second per key (default: none)"
    )
    concurrency = p.add_argument_group("batch line concurrency (max_concurrency)")
    concurrency.add_argument(
        "--default-line-concurrency",
        type=int,
        default=defaults.default_line_concurrency,
        help="max_concurrency of a batch created without one (default: %(default)s)",
    )
    concurrency.add_argument(
        "--max-line-concurrency",
        type=int,
        default=defaults.max_line_concurrency,
        help="the highest max_concurrency a create accepts (default: %(default)s)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = EmulatorSettings(
            api_keys=tuple(args.api_keys),
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            validation_seconds=args.validation_seconds,
            lines_per_second=args.lines_per_second,
            finalizing_seconds=args.finalizing_seconds,
            completion_window_seconds=args.completion_window_seconds,
            time_scale=args.time_scale,
            latency=args.latency,
            rate_limit=args.rate_limit,
            default_line_concurrency=args.default_line_concurrency,
            max_line_concurrency=args.max_line_concurrency,
        )
    except ValueError as exc:
        parser.error(str(exc))

    from uvicorn.config import LOGGING_CONFIG

    from airflow_provider_batches.emulator.server import EmulatorServer

    try:
        server = EmulatorServer(
            settings,
            log_config=LOGGING_CONFIG,
            on_ready=lambda: print(f"MKA1 emulator listening on {server.base_url}", flush=True),
        )
    except OSError as exc:
        print(f"Cannot start the MKA1 emulator: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    # uvicorn handles these signals while it runs and re-raises them once it has shut down; this handler
    # makes that re-raise (and a signal arriving before uvicorn starts) a clean stop, so the data directory
    # still gets cleaned up and the exit status is 0.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
