"""JSON for the job's per-line loops: msgspec where it is installed (Airflow 3's task SDK brings it),
else the standard library, with the same answers (compact, UTF-8, no NaN). Nothing else."""

from __future__ import annotations

import json
from typing import Any


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


try:
    import msgspec
except ImportError:  # Airflow 2.11 does not bring it: the standard library, about 5x slower
    _decoder = json.JSONDecoder(parse_constant=_no_constants)

    def loads(data: bytes) -> Any:
        """Parse one JSON document (a line's bytes)."""
        return _decoder.decode(data.decode("utf-8"))

    def dumps(value: Any) -> bytes:
        """Serialise compactly, as UTF-8."""
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    DECODE_ERRORS: tuple[type[Exception], ...] = (ValueError,)
else:
    _msgspec_decoder = msgspec.json.Decoder()
    _msgspec_encoder = msgspec.json.Encoder()

    def loads(data: bytes) -> Any:
        """Parse one JSON document (a line's bytes)."""
        return _msgspec_decoder.decode(data)

    def dumps(value: Any) -> bytes:
        """Serialise compactly, as UTF-8."""
        return _msgspec_encoder.encode(value)

    DECODE_ERRORS = (ValueError, msgspec.DecodeError)
