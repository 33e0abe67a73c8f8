"""The Files API: upload, get, list, content, delete; auth, tenancy, error shapes, request ids."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest
import requests
from emulator_helpers import KEY, REQUEST_ID, Client, assert_error, jsonl

FILE_FIELDS = {"id", "object", "bytes", "created_at", "filename", "purpose", "status", "expires_at", "sha256"}


def test_upload_get_and_content(api: Client) -> None:
    data = jsonl(3)
    r = api.post("/files", files={"file": ("requests.jsonl", data)}, data={"purpose": "batch"})
    assert r.status_code == 200
    assert REQUEST_ID.match(r.headers["X-Request-ID"])
    f = r.json()
    assert set(f) == FILE_FIELDS
    assert f["id"].startswith("file-")
    assert f["object"] == "file"
    assert f["bytes"] == len(data)
    assert isinstance(f["created_at"], int)
    assert (f["filename"], f["purpose"], f["expires_at"]) == ("requests.jsonl", "batch", None)
    assert f["sha256"] == hashlib.sha256(data).hexdigest()
    assert api.get(f"/files/{f['id']}").json() == f

    content = api.get(f"/files/{f['id']}/content")
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["Content-Type"] == "application/jsonl"
    assert content.headers["Content-Length"] == str(len(data))
    assert REQUEST_ID.match(content.headers["X-Request-ID"])


@pytest.mark.parametrize(
    ("filename", "part_type", "expected"),
    [
        ("notes.txt", "text/plain", "text/plain"),
        ("UPPER.JSONL", "application/octet-stream", "application/jsonl"),
        ("rows.ndjson", None, "application/x-ndjson"),
        ("table.csv", "text/csv; charset=utf-8", "text/csv"),
        ("picture", "image/png", "image/png"),
        ("report.pdf", "application/octet-stream", "application/pdf"),
        # Neither the part's type nor the name gives a type the SDK lists: served as plain text.
        ("blob.bin", None, "text/plain"),
        ("data.parquet", "application/x-parquet", "text/plain"),
    ],
)
def test_content_type_is_one_the_sdk_lists(
    api: Client, filename: str, part_type: str | None, expected: str
) -> None:
    part = (filename, b"abc") if part_type is None else (filename, b"abc", part_type)
    r = api.post("/files", files={"file": part}, data={"purpose": "user_data"})
    assert r.status_code == 200, r.text
    assert api.get(f"/files/{r.json()['id']}/content").headers["Content-Type"].startswith(expected)


def test_upload_is_streamed_in_chunks(api: Client) -> None:
    """A chunked upload of 24 MiB: the emulator parses it as it arrives and keeps every byte."""
    boundary = "emulatorboundary7x"
    chunk = os.urandom(1 << 20)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(24):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    r = api.post("/files", data=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["bytes"] == 24 << 20
    assert f["sha256"] == hashlib.sha256(chunk * 24).hexdigest()
    with api.get(f"/files/{f['id']}/content", stream=True) as content:
        assert content.headers["Content-Length"] == str(24 << 20)
        digest = hashlib.sha256()
        for piece in content.iter_content(1 << 16):
            digest.update(piece)
    assert digest.hexdigest() == f["sha256"]


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({"file": ("", b"x")}, {"purpose": "batch"}, "file"),
        ({"file": ("   ", b"x")}, {"purpose": "batch"}, "file"),
        ({"file": ("blob", b"x")}, {"purpose": "batch"}, "file"),
        ({"other": ("a.jsonl", b"x")}, {"purpose": "batch"}, "file"),
        ({"file": ("a.jsonl", b"x")}, {}, "purpose"),
        ({"file": ("a.jsonl", b"x")}, {"purpose": "training"}, "purpose"),
    ],
    ids=[
        "blank-filename",
        "whitespace-filename",
        "blob-filename",
        "no-file-part",
        "no-purpose",
        "bad-purpose",
    ],
)
def test_upload_validation(api: Client, files: dict, data: dict, param: str) -> None:
    assert_error(api.post("/files", files=files, data=data), 400, param)


def test_upload_needs_a_multipart_body(api: Client) -> None:
    assert_error(api.post("/files", json={"file": "x", "purpose": "batch"}), 400)
    r = api.post(
        "/files", data=b"--nope\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_error(r, 400)


def test_list_orders_pages_and_filters(emu, api: Client) -> None:
    owner = Client(emu, KEY, on_behalf_of="list-owner")
    ids = [
        owner.upload(jsonl(1), f"f{i}.jsonl", purpose="batch" if i % 2 else "evals")["id"] for i in range(5)
    ]

    listed = owner.get("/files").json()
    assert listed["object"] == "list"
    assert [f["id"] for f in listed["data"]] == ids[::-1]
    assert (listed["first_id"], listed["last_id"], listed["has_more"]) == (ids[-1], ids[0], False)
    assert [f["id"] for f in owner.get("/files", params={"order": "asc"}).json()["data"]] == ids
    assert [f["id"] for f in owner.get("/files", params={"purpose": "batch"}).json()["data"]] == [
        ids[3],
        ids[1],
    ]

    other = owner.upload(jsonl(2), "other.jsonl")
    by_hash = owner.get("/files", params={"sha256": other["sha256"]}).json()["data"]
    assert [f["id"] for f in by_hash] == [other["id"]]
    same = owner.get("/files", params={"sha256": owner.get(f"/files/{ids[0]}").json()["sha256"]}).json()
    assert [f["id"] for f in same["data"]] == ids[::-1]
    assert owner.get("/files", params={"sha256": "0" * 64}).json()["data"] == []
    owner.delete(f"/files/{other['id']}")

    seen, after = [], None
    while True:
        params = {"limit": 2, "order": "asc", **({"after": after} if after else {})}
        page = owner.get("/files", params=params).json()
        seen += [f["id"] for f in page["data"]]
        assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids

    empty = Client(emu, KEY, on_behalf_of="nobody").get("/files").json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "file-doesnotexist"}, "after"),
        ({"sha256": "ABC"}, "sha256"),
        ({"sha256": "A" * 64}, "sha256"),
    ],
)
def test_list_validation(api: Client, params: dict, param: str) -> None:
    assert_error(api.get("/files", params=params), 400, param)


def test_delete(api: Client) -> None:
    f = api.upload(jsonl(1))
    r = api.delete(f"/files/{f['id']}")
    assert r.status_code == 200
    assert r.json() == {"id": f["id"], "object": "file", "deleted": True}
    assert_error(api.get(f"/files/{f['id']}"), 404)
    assert_error(api.get(f"/files/{f['id']}/content"), 404)
    assert_error(api.delete(f"/files/{f['id']}"), 404)
    assert f["id"] not in {x["id"] for x in api.get("/files").json()["data"]}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "unknown-key", "wrong-scheme", "empty"],
)
def test_auth(emu, headers: dict) -> None:
    for method, path in (
        ("GET", "/files"),
        ("GET", "/batches"),
        ("POST", "/batches"),
        ("GET", "/files/file-x"),
        ("GET", "/files/file-x/content"),
    ):
        assert_error(requests.request(method, emu.api_url + path, headers=headers, timeout=10), 401)


def test_other_owners_get_404_and_empty_lists(api: Client, other_key: Client, other_user: Client) -> None:
    f = api.upload(jsonl(2))
    for stranger in (other_key, other_user):
        assert_error(stranger.get(f"/files/{f['id']}"), 404)
        assert_error(stranger.get(f"/files/{f['id']}/content"), 404)
        assert_error(stranger.delete(f"/files/{f['id']}"), 404)
        assert f["id"] not in {x["id"] for x in stranger.get("/files").json()["data"]}
        assert_error(stranger.get("/files", params={"after": f["id"]}), 400, "after")
    # What an end user uploads is theirs alone, even for the key's own calls without X-On-Behalf-Of.
    g = other_user.upload(jsonl(1))
    assert_error(api.get(f"/files/{g['id']}"), 404)
    assert other_user.get(f"/files/{g['id']}").status_code == 200
    assert api.get(f"/files/{f['id']}").status_code == 200


def test_unknown_urls_and_methods_answer_in_the_api_shape(api: Client) -> None:
    assert_error(api.get("/nothing-here"), 404)
    assert_error(api.get("/batches/x/y/z"), 404)
    assert_error(api.request("PUT", "/files"), 405)


def test_every_response_has_a_distinct_request_id(emu, api: Client) -> None:
    responses = [
        api.get("/files"),
        api.get("/files/file-missing"),
        api.post("/batches", data=b"{not json"),
        requests.get(emu.api_url + "/files", timeout=10),
        requests.get(emu.base_url + "/_emulator/health", timeout=10),
        requests.get(emu.base_url + "/elsewhere", timeout=10),
    ]
    ids = [r.headers["X-Request-ID"] for r in responses]
    assert all(REQUEST_ID.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
