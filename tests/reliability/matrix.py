"""The fault matrix's vocabulary (faults, ways of waiting) and its table."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.support import LONG

# The read timeout the matrix's connection sets (extra "timeout"), and how long a stall lasts past it.
READ_TIMEOUT = 0.5
STALL_SECONDS = 1.5 if LONG else 0.9
RETRY_AFTER = 2 if LONG else 1
# How many consecutive calls a transient fault hits. With the matrix's max_retries=1 the first wait call
# fails for good (2 attempts) and the wait itself (the sensor's next poke, the poller's or the trigger's
# error budget) has to carry on; the next call sees the last fault and the hook's own retry gets through.
TRANSIENT_COUNT = 5 if LONG else 3
MAX_RETRIES = 1


@dataclass(frozen=True)
class FaultSpec:
    name: str
    transient: bool
    spec: dict[str, Any]
    status: int | None = None  # the status a permanent fault must name
    server_message: str | None = None  # the server's own message a permanent fault must carry

    def add_to(self, emulator: Any, path: str) -> None:
        count = TRANSIENT_COUNT if self.transient else 1
        emulator.add_fault(method="GET", path=path, count=count, **self.spec)


def _permanent(name: str, status: int, shape: str) -> FaultSpec:
    message = f"{name} from the fault matrix {uuid.uuid4().hex[:8]}"
    if shape == "nested":
        body: Any = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    else:
        body = {"error": message}
    return FaultSpec(name, False, {"kind": "status", "status": status, "body": body}, status, message)


FAULTS: list[FaultSpec] = [
    FaultSpec("429", True, {"kind": "status", "status": 429}),
    FaultSpec("429 Retry-After", True, {"kind": "status", "status": 429, "retry_after": RETRY_AFTER}),
    FaultSpec("500", True, {"kind": "status", "status": 500}),
    FaultSpec("502 HTML", True, {"kind": "status", "status": 502}),
    FaultSpec("503", True, {"kind": "status", "status": 503}),
    FaultSpec("504", True, {"kind": "status", "status": 504}),
    FaultSpec("stall > timeout", True, {"kind": "stall", "seconds": STALL_SECONDS}),
    FaultSpec("closed mid-answer", True, {"kind": "drop"}),
    FaultSpec("truncated JSON", True, {"kind": "truncate"}),
    _permanent("401", 401, "nested"),
    _permanent("403", 403, "flat"),
    _permanent("404", 404, "nested"),
    FaultSpec(
        "200 wrong shape",
        False,
        {"kind": "status", "status": 200, "body": {"object": "batch", "id": 42, "status": ["completed"]}},
        200,
    ),
    FaultSpec(
        "200 HTML",
        False,
        {
            "kind": "status",
            "status": 200,
            "body": "<html><body>Please log in to the proxy</body></html>",
            "content_type": "text/html",
        },
        200,
    ),
]

MODES = ["sensor poke", "sensor reschedule", "sensor deferred", "operator sync", "operator deferred"]


@dataclass
class Cell:
    fault: str
    mode: str
    outcome: str
    requests: int
    seconds: float
    ok: bool


@dataclass
class Matrix:
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def record(self, cell: Cell) -> None:
        self.cells[(cell.fault, cell.mode)] = cell


MATRIX = Matrix()


def render_matrix(matrix: Matrix) -> str:
    """A row per fault, a column per way of waiting; a cell: outcome, requests made (GET /batches/{id})."""
    faults = [f.name for f in FAULTS if any((f.name, m) in matrix.cells for m in MODES)]
    header = ["fault \\ mode", *MODES]
    rows = []
    for fault in faults:
        row = [fault]
        for mode in MODES:
            cell = matrix.cells.get((fault, mode))
            if cell is None:
                row.append("-")
            else:
                mark = "" if cell.ok else " !!"
                row.append(f"{cell.outcome}, {cell.requests} req{mark}")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    total = sum(c.seconds for c in matrix.cells.values())
    failed = [f"{c.fault} x {c.mode}" for c in matrix.cells.values() if not c.ok]
    out.append(
        f"{len(matrix.cells)} cells, {total:.1f} s; "
        + (f"FAILED: {', '.join(failed)}" if failed else "every cell as expected")
        + f" (settings: {'long' if LONG else 'CI'}; read timeout {READ_TIMEOUT} s, "
        f"max_retries {MAX_RETRIES}, {TRANSIENT_COUNT} consecutive transient faults, "
        f"Retry-After {RETRY_AFTER} s)"
    )
    return "\n".join(out)
