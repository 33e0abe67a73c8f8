"""The checks of what is sent (validation.py), as pure functions: no server needed."""

from __future__ import annotations

import pytest

from airflow_provider_batches import validation
from airflow_provider_batches.exceptions import (
    MKA1InvalidInputError,
)
from airflow_provider_batches.validation import (
    api_path,
    validate_base_path,
    validate_header_value,
    validate_id,
)
from tests.conftest import HOSTILE_HEADER_VALUES, HOSTILE_IDS


@pytest.mark.parametrize("value", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_hostile_ids_are_refused(value: object) -> None:
    with pytest.raises(MKA1InvalidInputError, match="Invalid batch id"):
        validate_id(value, "batch id")


@pytest.mark.parametrize("value", ["file-abc123", "file_abc123", "batch_6f2a", "A", "x" * 128, "0-_"])
def test_documented_ids_are_accepted(value: str) -> None:
    assert validate_id(value) == value


@pytest.mark.parametrize("value", HOSTILE_HEADER_VALUES, ids=range(len(HOSTILE_HEADER_VALUES)))
def test_hostile_header_values_are_refused(value: object) -> None:
    with pytest.raises(MKA1InvalidInputError, match="on_behalf_of"):
        validate_header_value(value, "on_behalf_of")
    if value not in ("", None):
        with pytest.raises(MKA1InvalidInputError, match="on_behalf_of"):
            validation.validate_on_behalf_of(value)


def test_header_value_rules() -> None:
    assert validate_header_value("user-1 (eu)", "x") == "user-1 (eu)"
    assert validation.validate_on_behalf_of(None) is None
    with pytest.raises(MKA1InvalidInputError, match="on_behalf_of"):
        validation.validate_on_behalf_of("")  # a template that rendered empty is not "no end user"
    assert validate_header_value("u" * 256, "x") == "u" * 256


def test_api_path_quotes_every_segment() -> None:
    assert api_path("batches", "batch_1", "cancel") == "/batches/batch_1/cancel"
    assert api_path("files", "a/b") == "/files/a%2Fb"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "/api/v1/llm"), ("/api/v1/llm/", "/api/v1/llm"), ("v1", "/v1"), ("", ""), ("/", "")],
)
def test_base_path_normalised(value: str | None, expected: str) -> None:
    assert validate_base_path(value) == expected


@pytest.mark.parametrize("value", ["/api/../admin", "/a b", "/a%2Fb", "/a?x=1", 5])
def test_bad_base_path_refused(value: object) -> None:
    with pytest.raises(MKA1InvalidInputError, match="base_path"):
        validate_base_path(value)
