"""The other direction: every answer shape the vendor SDK says the API can give, read by our models.

The shapes are built with the SDK's own models (each status and purpose, each optional field absent,
null and set), serialized as the SDK puts them on the wire, then parsed by the provider's models.
"""

from __future__ import annotations

import itertools
import typing
from typing import Any

import pytest
from meetkai_mka1 import models
from pydantic import BaseModel

from airflow_provider_batches.models import (
    Batch,
    BatchPage,
    BatchStatus,
    FileDeleted,
    FileObject,
    FilePage,
    parse_status,
)


def literals(alias: Any) -> list[str]:
    """The string values of a ``Union[Literal[...], UnrecognizedStr]`` (or a plain ``Literal``)."""
    return [
        v for arg in typing.get_args(alias) or (alias,) for v in typing.get_args(arg) if isinstance(v, str)
    ]


BATCH_STATUSES = literals(models.BatchObjectStatus)
PURPOSES = literals(models.Purpose)
FILE_STATUSES = literals(models.FileStatus)
# Every field the SDK's Batch may leave out: each is sent absent, null and set below.
OPTIONAL_BATCH_FIELDS = [
    name for name, f in models.BatchObject.model_fields.items() if not f.is_required() and name != "object"
]
SET_VALUES: dict[str, Any] = {
    "errors": models.BatchErrors(
        data=[
            models.BatchErrorData(code="invalid_json_line", message="bad", line=2),
            models.BatchErrorData(code="x", message="y", param=None, line=None),
            models.BatchErrorData(code="mismatched_url", message="z", param="url"),
        ]
    ),
    "output_file_id": "file-out",
    "error_file_id": "file_err",
    "metadata": {"k": "v"},
}


def wire(sdk_model: BaseModel) -> dict[str, Any]:
    """The JSON the SDK's model stands for: absent fields left out, explicit nulls kept."""
    return sdk_model.model_dump(mode="json", by_alias=True, warnings=False)


def assert_holds(ours: Any, sent: Any, where: str = "") -> None:
    """Every value sent is kept by our model (our model may add defaults of its own)."""
    if isinstance(sent, dict):
        for key, value in sent.items():
            assert key in ours, f"{where}.{key} lost"
            assert_holds(ours[key], value, f"{where}.{key}")
    elif isinstance(sent, list):
        assert len(ours) == len(sent), where
        for i, (a, b) in enumerate(zip(ours, sent, strict=True)):
            assert_holds(a, b, f"{where}[{i}]")
    else:
        assert ours == sent, f"{where}: sent {sent!r}, read {ours!r}"


def sdk_batch(status: str, optional: str) -> models.BatchObject:
    fields: dict[str, Any] = {}
    if optional != "absent":
        for name in OPTIONAL_BATCH_FIELDS:
            fields[name] = None if optional == "null" else SET_VALUES.get(name, 1_796_000_000)
    return models.BatchObject(
        id="batch_1",
        endpoint="/v1/responses",
        input_file_id="file-in",
        completion_window="24h",
        status=status,
        created_at=1_796_000_000,
        request_counts=models.RequestCounts(total=10, completed=7, failed=3),
        max_concurrency=8,
        **fields,
    )


@pytest.mark.parametrize(
    ("status", "optional"),
    list(itertools.product([*BATCH_STATUSES, "paused_by_vendor"], ["absent", "null", "set"])),
)
def test_every_batch_shape(status: str, optional: str) -> None:
    sent = wire(sdk_batch(status, optional))
    ours = Batch.model_validate(sent)
    assert_holds(ours.model_dump(mode="json"), sent)
    assert ours.status == parse_status(status)
    assert ours.is_terminal == (status in {"completed", "failed", "expired", "cancelled"})
    assert isinstance(ours.status, BatchStatus) == (status in BATCH_STATUSES)


def sdk_file(purpose: str, status: str | None, optional: str) -> models.File:
    fields: dict[str, Any] = {}
    if status is not None:
        fields["status"] = status
    if optional == "null":
        fields.update(expires_at=None, sha256=None)
    elif optional == "set":
        fields.update(expires_at=1_796_086_400, sha256="ab" * 32, status_details="ok", object="file")
    return models.File(
        id="file_abc123", bytes=12, created_at=1, filename="a.jsonl", purpose=purpose, **fields
    )


@pytest.mark.parametrize(
    ("purpose", "status", "optional"),
    list(itertools.product([*PURPOSES, "batch_output"], [*FILE_STATUSES, None], ["absent", "null", "set"])),
)
def test_every_file_shape(purpose: str, status: str | None, optional: str) -> None:
    sent = wire(sdk_file(purpose, status, optional))
    ours = FileObject.model_validate(sent)
    assert_holds(ours.model_dump(mode="json"), sent)


@pytest.mark.parametrize("ids", [{}, {"first_id": "a", "last_id": "b"}])
@pytest.mark.parametrize("has_more", [True, False])
def test_list_shapes(ids: dict[str, str], has_more: bool) -> None:
    batches = wire(models.ListBatchesResponse(data=[sdk_batch("completed", "set")], has_more=has_more, **ids))
    assert_holds(BatchPage.model_validate(batches).model_dump(mode="json"), batches)
    empty = wire(models.ListBatchesResponse(data=[], has_more=False))
    assert BatchPage.model_validate(empty).data == []
    files = wire(models.FileList(data=[sdk_file("batch", None, "absent")], has_more=has_more, **ids))
    assert_holds(FilePage.model_validate(files).model_dump(mode="json"), files)


@pytest.mark.parametrize("deleted", [True, False])
def test_deletion_shape(deleted: bool) -> None:
    sent = wire(models.FileDeletionStatus(id="file-1", deleted=deleted))
    assert_holds(FileDeleted.model_validate(sent).model_dump(mode="json"), sent)
