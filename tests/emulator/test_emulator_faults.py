"""Faults on demand, the rate limit, latency, the call counter and the admin API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from emulator_helpers import CHAT, KEY, OTHER_KEY, REQUEST_ID, Client, jsonl

from airflow_provider_batches.emulator import EmulatorAdmin, EmulatorAdminError, EmulatorHandle

BATCHES = "/api/v1/llm/batches"


@pytest.fixture(autouse=True)
def _clean(emu: EmulatorHandle) -> Iterator[None]:
    emu.clear_faults()
    emu.set_latency(0)
    emu.set_rate_limit(None)
    emu.reset_calls()
    yield
    emu.clear_faults()
    emu.set_latency(0)
    emu.set_rate_limit(None)


def test_status_fault_hits_the_next_n_matching_calls(emu: EmulatorHandle, api: Client) -> None:
    emu.add_fault(method="GET", path=f"{BATCHES}/*", kind="status", status=503, count=2)
    assert [f["count"] for f in emu.faults()] == [2]
    assert api.get("/batches").status_code == 200  # the glob wants a batch id: not consumed
    first, second, third = (api.get("/batches/batch_x") for _ in range(3))
    for r in (first, second):
        assert r.status_code == 503
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["error"]["type"] == "server_error"
        assert REQUEST_ID.match(r.headers["X-Request-ID"])
        assert "Retry-After" not in r.headers
    assert third.status_code == 404  # the real answer again
    assert emu.faults() == []


def test_fault_matches_the_method(emu: EmulatorHandle, api: Client) -> None:
    emu.add_fault(method="POST", path=BATCHES, kind="status", status=500, count=1)
    assert api.get("/batches").status_code == 200
    r = api.post("/batches", json={})
    assert r.status_code == 500 and r.json()["error"]["message"]
    emu.add_fault(method="*", path="/api/v1/llm/files*", status=500, count=2)
    assert api.get("/files").status_code == 500
    assert api.delete("/files/file-x").status_code == 500
    assert api.get("/files").status_code == 200


def test_429_with_and_without_retry_after(emu: EmulatorHandle, api: Client) -> None:
    emu.add_fault(path=BATCHES, status=429, count=1)
    plain = api.get("/batches")
    assert plain.status_code == 429
    assert plain.json() == {"error": "Rate limit exceeded"}
    assert "Retry-After" not in plain.headers and "retry-after-ms" not in plain.headers

    emu.add_fault(path=BATCHES, status=429, count=1, retry_after=2)
    assert api.get("/batches").headers["Retry-After"] == "2"
    emu.add_fault(path=BATCHES, status=429, count=1, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    assert api.get("/batches").headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    emu.add_fault(path=BATCHES, status=429, count=1, retry_after_ms=150)
    r = api.get("/batches")
    assert r.headers["retry-after-ms"] == "150" and "Retry-After" not in r.headers


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_answer_html(emu: EmulatorHandle, api: Client, status: int) -> None:
    emu.add_fault(path=BATCHES, status=status, count=1)
    r = api.get("/batches")
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.text.startswith("<html>") and str(status) in r.text
    with pytest.raises(ValueError):
        r.json()


def test_custom_body_and_content_type(emu: EmulatorHandle, api: Client) -> None:
    emu.add_fault(path=BATCHES, status=418, count=1, body={"error": "teapot"})
    r = api.get("/batches")
    assert (r.status_code, r.json()) == (418, {"error": "teapot"})
    emu.add_fault(path=BATCHES, status=500, count=1, body="", content_type="text/plain")
    r = api.get("/batches")
    assert (r.status_code, r.content, r.headers["Content-Type"]) == (500, b"", "text/plain")
    emu.add_fault(path=BATCHES, status=503, count=1, body="<p>down</p>", content_type="text/html")
    r = api.get("/batches")
    assert (r.text, r.headers["Content-Type"]) == ("<p>down</p>", "text/html")


def test_stall_delays_then_answers_normally(emu: EmulatorHandle, api: Client) -> None:
    emu.add_fault(path=BATCHES, kind="stall", seconds=0.5, count=1)
    start = time.monotonic()
    r = api.get("/batches")
    assert time.monotonic() - start >= 0.5
    assert r.status_code == 200 and r.json()["object"] == "list"

    emu.add_fault(path=BATCHES, kind="stall", seconds=1.0, count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.get("/batches", timeout=0.3)


def test_drop_closes_the_connection_after_doing_the_work(emu: EmulatorHandle, api: Client) -> None:
    f = api.upload(jsonl(1))
    before = {b["id"] for b in api.get("/batches", params={"limit": 100}).json()["data"]}
    emu.add_fault(method="POST", path=BATCHES, kind="drop", count=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        api.post("/batches", json={"input_file_id": f["id"], "endpoint": CHAT, "completion_window": "24h"})
    # The answer was lost, not the batch: exactly what a blind retry would duplicate.
    after = {b["id"] for b in api.get("/batches", params={"limit": 100}).json()["data"]}
    assert len(after - before) == 1
    assert api.get("/batches").status_code == 200  # the server itself is fine


def test_truncate_sends_half_the_promised_body(emu: EmulatorHandle, api: Client) -> None:
    data = jsonl(200)
    f = api.upload(data)
    emu.add_fault(path=f"/api/v1/llm/files/{f['id']}/content", kind="truncate", count=2)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.get(f"/files/{f['id']}/content")
    with api.get(f"/files/{f['id']}/content", stream=True) as r:
        assert r.headers["Content-Length"] == str(len(data))
        received = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in r.iter_content(4096):
                received += chunk
    assert 0 < len(received) < len(data) and data.startswith(received)
    assert api.content(f["id"]) == data


def test_truncated_json_answer(emu: EmulatorHandle, api: Client) -> None:
    emu.add_fault(path=BATCHES, kind="truncate", count=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.get("/batches")


def test_rate_limit_per_key(emu: EmulatorHandle) -> None:
    a, b = Client(emu, KEY), Client(emu, OTHER_KEY)
    emu.set_rate_limit(2)
    start = time.monotonic()
    burst = [a.get("/batches") for _ in range(10)]
    elapsed = time.monotonic() - start
    ok = [r for r in burst if r.status_code == 200]
    limited = [r for r in burst if r.status_code == 429]
    assert len(ok) + len(limited) == 10
    assert burst[0].status_code == burst[1].status_code == 200
    assert 2 <= len(ok) <= 3 + int(elapsed * 2), [r.status_code for r in burst]
    assert limited[0].json() == {"error": "Rate limit exceeded"}
    assert REQUEST_ID.match(limited[0].headers["X-Request-ID"])
    assert b.get("/batches").status_code == 200  # another key has its own budget
    assert emu.calls("GET", BATCHES, status=429) == len(limited)
    assert emu.calls("GET", BATCHES, status=200) == len(ok) + 1
    time.sleep(1.1)  # a whole second's worth: the bucket is full again however loaded the machine is
    assert a.get("/batches").status_code == 200  # refilled
    emu.set_rate_limit(None)
    assert all(a.get("/batches").status_code == 200 for _ in range(20))


def test_latency_applies_to_api_calls_without_blocking(emu: EmulatorHandle, api: Client) -> None:
    emu.set_latency(0.3)
    start = time.monotonic()
    assert api.get("/batches").status_code == 200
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    emu.health()  # admin calls are not delayed
    assert time.monotonic() - start < 0.25

    def call(_: int) -> int:
        return requests.get(
            emu.api_url + "/batches", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
        ).status_code

    start = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(call, range(20))) == [200] * 20
    assert time.monotonic() - start < 1.5  # 20 x 0.3 s, concurrently
    emu.set_latency(0)
    start = time.monotonic()
    api.get("/batches")
    assert time.monotonic() - start < 0.25


def test_latency_at_start() -> None:
    from airflow_provider_batches.emulator import run_emulator

    with run_emulator(api_keys=(KEY,), latency=0.2) as emu:
        start = time.monotonic()
        assert Client(emu).get("/files").status_code == 200
        assert time.monotonic() - start >= 0.2


def test_call_counter(emu: EmulatorHandle, api: Client) -> None:
    api.get("/batches/batch_a")
    api.get("/batches/batch_b")
    api.get("/batches")
    api.post("/batches", json={})
    requests.get(emu.api_url + "/files", timeout=10)  # unauthenticated calls count too
    emu.health()
    assert emu.calls() == 5
    assert emu.calls(method="GET") == 4
    assert emu.calls(method="get", path=f"{BATCHES}/*") == 2
    assert emu.calls(path=BATCHES) == 2
    assert emu.calls("POST", BATCHES) == 1
    assert emu.calls(path="/_emulator/*") == 0
    emu.add_fault(path=BATCHES, status=503, count=1)
    api.get("/batches")
    assert emu.calls("GET", BATCHES) == 2  # a faulted call is still a call
    emu.reset_calls()
    assert emu.calls() == 0


def test_admin_api(emu: EmulatorHandle) -> None:
    admin = EmulatorAdmin(emu.base_url)
    assert admin.health()["status"] == "ok"
    assert emu.admin.api_url == emu.api_url == emu.base_url + "/api/v1/llm"
    for bad in ({"kind": "explode"}, {"count": 0}, {"kind": "status", "status": 42}, {"kind": "stall"}):
        with pytest.raises(EmulatorAdminError):
            admin.add_fault(**bad)
    with pytest.raises(EmulatorAdminError):
        admin.set_latency(-1)
    with pytest.raises(EmulatorAdminError):
        admin.set_rate_limit(0)
    with pytest.raises(EmulatorAdminError):
        admin.advance_clock(-5)
    r = requests.post(emu.base_url + "/_emulator/faults", json={"kind": "status", "status": 503}, timeout=10)
    assert r.status_code == 200 and REQUEST_ID.match(r.headers["X-Request-ID"])
    assert r.json()["fault"]["count"] == 1 and r.json()["fault"]["method"] == "*"
    bad = requests.post(emu.base_url + "/_emulator/faults", json={"kind": "nope"}, timeout=10)
    assert bad.status_code == 400 and REQUEST_ID.match(bad.headers["X-Request-ID"])
    assert bad.json()["error"]["type"] == "invalid_request_error"
