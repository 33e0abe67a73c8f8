"""The Files API of the emulator, driven through the vendor SDK: every operation, filter and error."""

from __future__ import annotations

import hashlib

import pytest
from meetkai_mka1 import SDK, errors
from sdk_helpers import content, end_user, jsonl, new_sdk, ok, refused, upload

from airflow_provider_batches.exceptions import MKA1AuthenticationError, MKA1NotFoundError
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from tests.conftest import connection_json

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


def test_upload_get_content_delete(sdk: SDK, obo: str) -> None:
    data = jsonl(3)
    f = upload(sdk, data, obo, name="requests.jsonl")
    assert (f.filename, f.purpose, f.bytes_, f.object) == ("requests.jsonl", "batch", len(data), "file")
    assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert ok(sdk.llm.files.get, file_id=f.id, x_on_behalf_of=obo) == f
    assert content(sdk, f.id, x_on_behalf_of=obo) == (data, "application/jsonl")

    gone = ok(sdk.llm.files.delete, file_id=f.id, x_on_behalf_of=obo)
    assert (gone.id, gone.deleted, gone.object) == (f.id, True, "file")
    refused(sdk.llm.files.get, 404, file_id=f.id, x_on_behalf_of=obo)
    refused(sdk.llm.files.delete, 404, file_id=f.id, x_on_behalf_of=obo)
    error = refused(
        sdk.llm.files.content, 404, errors.GetFileContentNotFoundError, file_id=f.id, x_on_behalf_of=obo
    )
    assert isinstance(error, errors.GetFileContentNotFoundError) and error.data.error is not None
    assert error.data.error.code == 404 and f.id in (error.data.error.message or "")


@pytest.mark.parametrize(
    ("name", "part_type", "served"),
    [
        ("a.jsonl", None, "application/jsonl"),
        ("a.ndjson", None, "application/x-ndjson"),
        ("a.json", None, "application/json"),
        ("a.csv", "text/csv", "text/csv"),
        ("a.txt", None, "text/plain"),
        ("a.md", None, "text/markdown"),
        ("a.pdf", "application/octet-stream", "application/pdf"),
        ("a.png", None, "image/png"),
        ("a.docx", None, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("no-extension", "image/webp", "image/webp"),
        ("no-extension", None, "text/plain"),
        ("a.bin", "application/octet-stream", "text/plain"),
    ],
)
def test_content_is_served_with_a_type_the_sdk_accepts(
    sdk: SDK, obo: str, name: str, part_type: str | None, served: str
) -> None:
    part = {"file_name": name, "content": b"\x89bytes\n"}
    if part_type is not None:
        part["content_type"] = part_type
    f = ok(sdk.llm.files.upload, file=part, purpose="user_data", x_on_behalf_of=obo)
    assert content(sdk, f.id, x_on_behalf_of=obo) == (b"\x89bytes\n", served)


def test_list_order_pagination_and_filters(sdk: SDK, obo: str) -> None:
    files = [upload(sdk, jsonl(1 + i), obo, name=f"f{i}.jsonl", purpose=p) for i, p in enumerate(PURPOSES)]
    ids = [f.id for f in files]
    newest_first = ok(sdk.llm.files.list, x_on_behalf_of=obo)
    assert [f.id for f in newest_first.data] == ids[::-1] and newest_first.has_more is False
    assert (newest_first.first_id, newest_first.last_id) == (ids[-1], ids[0])
    assert [f.id for f in ok(sdk.llm.files.list, order="asc", x_on_behalf_of=obo).data] == ids
    assert [f.id for f in ok(sdk.llm.files.list, order="desc", x_on_behalf_of=obo).data] == ids[::-1]
    for f in files:
        by_purpose = ok(sdk.llm.files.list, purpose=f.purpose, x_on_behalf_of=obo)
        assert [x.id for x in by_purpose.data] == [f.id]
        by_hash = ok(sdk.llm.files.list, sha256=f.sha256, x_on_behalf_of=obo)
        assert [x.id for x in by_hash.data] == [f.id]
    assert ok(sdk.llm.files.list, sha256="0" * 64, x_on_behalf_of=obo).data == []
    both = ok(sdk.llm.files.list, purpose="batch", sha256=files[0].sha256, x_on_behalf_of=obo)
    assert both.data == []  # files[0] is an "assistants" file

    seen, after, pages = [], None, 0
    while True:
        page = ok(sdk.llm.files.list, limit=4, order="asc", after=after, x_on_behalf_of=obo)
        seen += [f.id for f in page.data]
        pages += 1
        if not page.has_more:
            break
        after = page.last_id
    assert (seen, pages) == (ids, 2)

    empty = ok(sdk.llm.files.list, x_on_behalf_of=end_user())
    assert (empty.data, empty.has_more, empty.first_id, empty.last_id) == ([], False, None, None)


def test_another_key_or_end_user_sees_nothing(emulator, sdk: SDK, other_key_sdk: SDK, obo: str) -> None:
    f = upload(sdk, jsonl(1), obo)
    for client, who in ((other_key_sdk, obo), (sdk, end_user()), (sdk, None)):
        refused(client.llm.files.get, 404, file_id=f.id, x_on_behalf_of=who)
        refused(client.llm.files.delete, 404, file_id=f.id, x_on_behalf_of=who)
        refused(
            client.llm.files.content,
            404,
            errors.GetFileContentNotFoundError,
            file_id=f.id,
            x_on_behalf_of=who,
        )
        assert f.id not in {x.id for x in ok(client.llm.files.list, x_on_behalf_of=who).data}
        refused(client.llm.files.list, 400, after=f.id, x_on_behalf_of=who)
    assert ok(sdk.llm.files.get, file_id=f.id, x_on_behalf_of=obo).id == f.id


def test_unknown_ids_and_bad_keys(emulator, sdk: SDK) -> None:
    refused(sdk.llm.files.get, 404, file_id="file-doesnotexist")
    refused(sdk.llm.files.delete, 404, file_id="file-doesnotexist")
    error = refused(
        sdk.llm.files.content, 404, errors.GetFileContentNotFoundError, file_id="file-doesnotexist"
    )
    assert isinstance(error, errors.GetFileContentNotFoundError) and error.data.error is not None
    assert error.data.error.code == 404
    empty = refused(sdk.llm.files.content, 400, errors.GetFileContentBadRequestError, file_id="")
    assert isinstance(empty, errors.GetFileContentBadRequestError) and empty.data.error is not None
    assert empty.data.error.code == 400

    for key in ("wrong-key", None):
        stranger = new_sdk(emulator.base_url, key)
        refused(stranger.llm.files.list, 401)
        refused(stranger.llm.files.get, 401, file_id="file-x")
        unauthorized = refused(
            stranger.llm.files.content, 401, errors.GetFileContentUnauthorizedError, file_id="file-x"
        )
        assert isinstance(unauthorized, errors.GetFileContentUnauthorizedError)
        assert unauthorized.data.error is not None and unauthorized.data.error.code == 401


def test_server_error_on_content_is_the_sdks_typed_500(emulator, sdk: SDK, obo: str) -> None:
    f = upload(sdk, jsonl(1), obo)
    emulator.add_fault(method="GET", path=f"/api/v1/llm/files/{f.id}/content", status=500, count=1)
    refused(
        sdk.llm.files.content, 500, errors.GetFileContentInternalServerError, file_id=f.id, x_on_behalf_of=obo
    )


@pytest.mark.parametrize(
    ("part", "purpose"),
    [
        ({"file_name": "blob", "content": b"x"}, "batch"),
        ({"file_name": "  ", "content": b"x"}, "batch"),
    ],
    ids=["blob-placeholder", "blank-filename"],  # the SDK itself refuses an empty one
)
def test_upload_refuses_a_missing_filename(sdk: SDK, obo: str, part: dict, purpose: str) -> None:
    refused(sdk.llm.files.upload, 400, file=part, purpose=purpose, x_on_behalf_of=obo)
    assert ok(sdk.llm.files.list, x_on_behalf_of=obo).data == []


def test_list_refuses_bad_queries(sdk: SDK, obo: str) -> None:
    for query in ({"limit": 0}, {"limit": 10001}, {"after": "file-doesnotexist"}, {"sha256": "ABC"}):
        refused(sdk.llm.files.list, 400, x_on_behalf_of=obo, **query)


def test_hook_reports_the_message_and_code_of_a_content_error(emulator, mka1_conn: str, monkeypatch) -> None:
    """The hook reads the integer code of a file-content error as it read the string ones."""
    hook = MKA1Hook(mka1_conn)
    with pytest.raises(MKA1NotFoundError) as info:
        list(hook.iter_results("file-doesnotexist"))
    assert "No such File object: file-doesnotexist [404]" in str(info.value)
    hook.close()
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_WRONG_KEY", connection_json(emulator.base_url, "wrong-key"))
    hook = MKA1Hook("mka1_wrong_key")
    with pytest.raises(MKA1AuthenticationError) as auth:
        list(hook.iter_results("file-x"))
    assert "Invalid API key. [401]" in str(auth.value)
    hook.close()
