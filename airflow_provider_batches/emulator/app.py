"""The FastAPI app: the MKA1 Batch and Files API under /api/v1/llm, the admin API under /_emulator."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from airflow_provider_batches.emulator.answers import ENDPOINTS
from airflow_provider_batches.emulator.faults import ADMIN_PREFIX, Control, EmulatorMiddleware
from airflow_provider_batches.emulator.lifecycle import Engine, view_batch
from airflow_provider_batches.emulator.settings import EmulatorSettings
from airflow_provider_batches.emulator.shapes import (
    API_PREFIX,
    SHA256_HEX,
    APIError,
    content_type,
    error_response,
    max_concurrency,
)
from airflow_provider_batches.emulator.store import BatchRecord, FileRecord, Owner, Store
from airflow_provider_batches.emulator.upload import UploadError, receive_upload

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
COMPLETION_WINDOWS = ("24h",)


@dataclass
class Runtime:
    settings: EmulatorSettings
    store: Store
    engine: Engine
    control: Control
    key_hashes: dict[str, str]


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


async def _owner(request: Request, rt: RuntimeDep) -> Owner:
    header = request.headers.get("authorization")
    if not header:
        raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.", "missing_api_key")
    scheme, _, key = header.partition(" ")
    key_hash = rt.key_hashes.get(key.strip())
    if scheme.lower() != "bearer" or key_hash is None:
        raise APIError(401, "Invalid API key.", "invalid_api_key")
    return Owner(key_hash, request.headers.get("x-on-behalf-of", "").strip() or None)


OwnerDep = Annotated[Owner, Depends(_owner)]
api = APIRouter(prefix=API_PREFIX)
admin = APIRouter(prefix=ADMIN_PREFIX)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        raise APIError(400, "We could not parse the JSON body of your request.", "invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", "invalid_json")
    return body


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise APIError(400, f"Missing required parameter: '{name}'.", "missing_required_parameter", name)
    if not isinstance(value, str) or not value:
        raise APIError(400, f"Invalid type for '{name}': expected a non-empty string.", "invalid_type", name)
    return value


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise APIError(
            400,
            "Invalid type for 'metadata': expected a map of strings to strings.",
            "invalid_type",
            "metadata",
        )
    return value


def _page(
    items: Sequence[Any], after: str | None, limit: int, to_api: Callable[[Any], dict[str, Any]]
) -> JSONResponse:
    if after is not None:
        ids = [item.id for item in items]
        if after not in ids:
            raise APIError(400, f"Invalid 'after': no object with id '{after}'.", "invalid_value", "after")
        items = items[ids.index(after) + 1 :]
    data = [to_api(item) for item in items[:limit]]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(items) > limit,
        }
    )


def _batch(rt: Runtime, owner: Owner, batch_id: str) -> BatchRecord:
    rec = rt.store.batches.get(batch_id)
    if rec is None or rec.owner != owner:
        raise APIError(404, f"No batch found with id '{batch_id}'.", "not_found")
    return rec


def _file(rt: Runtime, owner: Owner, file_id: str) -> FileRecord:
    rec = rt.store.files.get(file_id)
    if rec is None or rec.owner != owner:
        raise APIError(404, f"No such File object: {file_id}", "not_found")
    return rec


@api.post("/batches")
async def create_batch(request: Request, rt: RuntimeDep, owner: OwnerDep) -> JSONResponse:
    body = await _json_object(request)
    input_file_id = _required_str(body, "input_file_id")
    endpoint = _required_str(body, "endpoint")
    if endpoint not in ENDPOINTS:
        raise APIError(
            400,
            f"Invalid value for 'endpoint': expected one of {', '.join(ENDPOINTS)}.",
            "invalid_value",
            "endpoint",
        )
    window = _required_str(body, "completion_window")
    if window not in COMPLETION_WINDOWS:
        raise APIError(
            400,
            "Invalid value for 'completion_window': only '24h' is supported.",
            "invalid_value",
            "completion_window",
        )
    metadata = _metadata(body.get("metadata"))
    concurrency = max_concurrency(body.get("max_concurrency"), rt.settings)
    source = rt.store.files.get(input_file_id)
    if source is None or source.owner != owner:
        raise APIError(
            400,
            f"Invalid 'input_file_id': no file with id '{input_file_id}'.",
            "invalid_value",
            "input_file_id",
        )
    if source.purpose != "batch":
        raise APIError(
            400,
            f"Invalid 'input_file_id': the file's purpose is '{source.purpose}', a batch needs 'batch'.",
            "invalid_value",
            "input_file_id",
        )
    s = rt.settings
    rec = await rt.engine.create(
        owner,
        input_file_id=input_file_id,
        endpoint=endpoint,
        completion_window=window,
        metadata=metadata,
        max_concurrency=concurrency,
        window_seconds=s.completion_window_seconds,
        validation_seconds=s.validation_seconds,
        lines_per_second=s.lines_per_second,
        finalizing_seconds=s.finalizing_seconds,
    )
    return JSONResponse(view_batch(rec, rt.store.clock.now()))


@api.get("/batches")
async def list_batches(
    rt: RuntimeDep,
    owner: OwnerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    now = rt.store.clock.now()
    items = [rec for rec in reversed(rt.store.batches.values()) if rec.owner == owner]
    return _page(items, after, limit, lambda rec: view_batch(rec, now))


@api.get("/batches/{batch_id}")
async def get_batch(batch_id: str, rt: RuntimeDep, owner: OwnerDep) -> JSONResponse:
    return JSONResponse(view_batch(_batch(rt, owner, batch_id), rt.store.clock.now()))


@api.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, rt: RuntimeDep, owner: OwnerDep) -> JSONResponse:
    rec = _batch(rt, owner, batch_id)
    if not rt.engine.cancel(rec):
        raise APIError(400, f"Cannot cancel a batch with status '{rec.status}'.", "invalid_state")
    return JSONResponse(view_batch(rec, rt.store.clock.now()))


@api.post("/files")
async def upload_file(request: Request, rt: RuntimeDep, owner: OwnerDep) -> JSONResponse:
    tmp = rt.store.tmp_path()
    try:
        upload = await receive_upload(request, tmp)
        purpose = upload.fields.get("purpose")
        if not purpose:
            raise APIError(
                400, "Missing required parameter: 'purpose'.", "missing_required_parameter", "purpose"
            )
        if purpose not in FILE_PURPOSES:
            raise APIError(
                400,
                f"Invalid value for 'purpose': expected one of {', '.join(FILE_PURPOSES)}.",
                "invalid_value",
                "purpose",
            )
        assert upload.filename is not None
        rec = rt.store.add_file(
            owner,
            tmp,
            filename=upload.filename,
            purpose=purpose,
            content_type=content_type(upload.filename, upload.content_type),
            size=upload.size,
            sha256=upload.sha256,
        )
    except UploadError as exc:
        raise APIError(400, str(exc), "invalid_request", exc.param) from None
    finally:
        tmp.unlink(missing_ok=True)
    return JSONResponse(rec.to_api())


@api.get("/files")
async def list_files(
    rt: RuntimeDep,
    owner: OwnerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: str = "desc",
    purpose: str | None = None,
    sha256: str | None = None,
) -> JSONResponse:
    if order not in ("asc", "desc"):
        raise APIError(400, "Invalid value for 'order': expected 'asc' or 'desc'.", "invalid_value", "order")
    if sha256 is not None and not SHA256_HEX.match(sha256):
        raise APIError(
            400, "Invalid value for 'sha256': expected 64 lowercase hex digits.", "invalid_value", "sha256"
        )
    items = [
        f
        for f in rt.store.files.values()
        if f.owner == owner
        and (purpose is None or f.purpose == purpose)
        and (sha256 is None or f.sha256 == sha256)
    ]
    if order == "desc":
        items.reverse()
    return _page(items, after, limit, FileRecord.to_api)


@api.get("/files/{file_id}")
async def get_file(file_id: str, rt: RuntimeDep, owner: OwnerDep) -> JSONResponse:
    return JSONResponse(_file(rt, owner, file_id).to_api())


@api.get("/files//content")
async def file_content_without_id(owner: OwnerDep) -> None:
    """What the SDK sends for ``file_id=""``: the 400 it types as "File ID is required"."""
    raise APIError(400, "Invalid request: a file ID is required.", "missing_required_parameter", "file_id")


@api.get("/files/{file_id}/content")
async def file_content(file_id: str, rt: RuntimeDep, owner: OwnerDep) -> FileResponse:
    rec = _file(rt, owner, file_id)
    # Re-derived so that files kept in a data directory from older emulators are served a listed type too.
    return FileResponse(rt.store.blob_path(rec.id), media_type=content_type(rec.filename, rec.content_type))


@api.delete("/files/{file_id}")
async def delete_file(file_id: str, rt: RuntimeDep, owner: OwnerDep) -> JSONResponse:
    rec = _file(rt, owner, file_id)
    rt.store.delete_file(rec.id)
    return JSONResponse({"id": rec.id, "object": "file", "deleted": True})


def _number(
    body: dict[str, Any], name: str, *, nullable: bool = False, positive: bool = False
) -> float | None:
    value = body.get(name)
    if value is None and nullable:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or value < 0
        or (positive and value == 0)
    ):
        raise APIError(
            400,
            f"'{name}' must be a {'positive' if positive else 'non-negative'} number.",
            "invalid_value",
            name,
        )
    return float(value)


@admin.get("/health")
async def health(rt: RuntimeDep) -> dict[str, Any]:
    return {
        "status": "ok",
        "now": rt.store.clock.now(),
        "files": len(rt.store.files),
        "batches": len(rt.store.batches),
    }


@admin.get("/clock")
async def clock(rt: RuntimeDep) -> dict[str, Any]:
    return {"now": rt.store.clock.now()}


@admin.post("/clock/advance")
async def advance_clock(request: Request, rt: RuntimeDep) -> dict[str, Any]:
    seconds = _number(await _json_object(request), "seconds")
    assert seconds is not None
    rt.store.clock.advance(seconds)
    await rt.engine.tick()  # so that the caller sees the transitions the jump implies
    return {"now": rt.store.clock.now()}


@admin.get("/faults")
async def list_faults(rt: RuntimeDep) -> dict[str, Any]:
    return {"faults": rt.control.fault_list()}


@admin.post("/faults")
async def add_fault(request: Request, rt: RuntimeDep) -> dict[str, Any]:
    try:
        fault = rt.control.add_fault(**await _json_object(request))
    except (TypeError, ValueError) as exc:
        raise APIError(400, f"Invalid fault: {exc}", "invalid_value") from None
    return {"fault": asdict(fault)}


@admin.delete("/faults")
async def clear_faults(rt: RuntimeDep) -> dict[str, Any]:
    rt.control.faults.clear()
    return {"faults": []}


@admin.get("/calls")
async def calls(
    rt: RuntimeDep, method: str | None = None, path: str | None = None, status: int | None = None
) -> dict[str, Any]:
    return {
        "count": rt.control.count_calls(method, path, status),
        "calls": [{"method": m, "path": p, "count": n} for (m, p), n in sorted(rt.control.calls.items())],
    }


@admin.delete("/calls")
async def reset_calls(rt: RuntimeDep) -> dict[str, Any]:
    rt.control.reset_calls()
    return {"count": 0}


@admin.put("/latency")
async def set_latency(request: Request, rt: RuntimeDep) -> dict[str, Any]:
    seconds = _number(await _json_object(request), "seconds")
    assert seconds is not None
    rt.control.latency = seconds
    return {"seconds": seconds}


@admin.put("/rate_limit")
async def set_rate_limit(request: Request, rt: RuntimeDep) -> dict[str, Any]:
    per_second = _number(await _json_object(request), "per_second", nullable=True, positive=True)
    rt.control.set_rate_limit(per_second)
    return {"per_second": per_second}


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(request, exc.status, exc.message, exc.code, exc.param)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return error_response(request, 404, f"Unknown request URL: {where}.", "unknown_url")
    if exc.status_code == 405:
        return error_response(request, 405, f"Method not allowed: {where}.", "method_not_allowed")
    return error_response(request, exc.status_code, str(exc.detail))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    param = (
        ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")) or None
    )
    message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    return error_response(request, 400, message, "invalid_value", param)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 500, "The emulator hit an internal error.", None, None, "server_error")


def _upgrade_records(store: Store, settings: EmulatorSettings) -> None:
    """Give records kept by older emulators the shapes the SDK reads (in memory; saved on next change)."""
    for batch in store.batches.values():
        if batch.max_concurrency is None:
            batch.max_concurrency = settings.default_line_concurrency
    for file in store.files.values():
        if file.purpose == "batch_output":
            file.purpose = "batch"


def create_app(
    settings: EmulatorSettings,
    store: Store,
    control: Control | None = None,
    transports: dict[tuple[str, int], asyncio.Transport] | None = None,
) -> ASGIApp:
    """The emulator as an ASGI app; ``transports`` is filled by the server (see faults)."""
    control = control or Control(settings.latency, settings.rate_limit)
    _upgrade_records(store, settings)
    engine = Engine(store)
    keys = {key: hashlib.sha256(key.encode()).hexdigest()[:16] for key in settings.api_keys}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(engine.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="MKA1 Batch API emulator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.runtime = Runtime(settings, store, engine, control, keys)
    app.include_router(api)
    app.include_router(admin)
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    return EmulatorMiddleware(app, control, transports)
