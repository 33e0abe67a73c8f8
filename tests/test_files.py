"""The pure parts of files.py: splitting a stream of chunks into lines (transfers are in tests/hooks)."""

from __future__ import annotations

from airflow_provider_batches.files import split_lines


def test_lines_split_across_chunks() -> None:
    chunks = [b"a", b"b\nc", b"", b"d\n\n", b"e" * 5, b"f\ng"]
    assert list(split_lines(chunks)) == [(1, b"ab"), (2, b"cd"), (3, b""), (4, b"eeeeef"), (5, b"g")]
    assert list(split_lines([b"x\n"])) == [(1, b"x")]
    assert list(split_lines([])) == []
