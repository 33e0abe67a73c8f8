"""Deterministic fake answers, one shape per batch endpoint: the same request always gets the same body."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/images/generations", "/v1/responses")

# A 1x1 transparent PNG, for images requested as b64_json.
_PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _tokens(value: object) -> int:
    return max(1, len(json.dumps(value, default=str)) // 4)


def _model(body: dict[str, Any], default: str) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else default


def _embedding(text: object, dimensions: int) -> list[float]:
    rng = random.Random(int(digest(text), 16))
    return [round(rng.uniform(-1.0, 1.0), 6) for _ in range(dimensions)]


def _from_schema(schema: Any, seed: str, depth: int = 0) -> Any:
    """A value that satisfies a (simple) JSON schema: what a model asked for structured output returns."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: _from_schema(sub, seed, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [_from_schema(schema.get("items"), seed, depth + 1)]
    if kind == "integer":
        return int(seed[:6], 16) % 100
    if kind == "number":
        return int(seed[:6], 16) % 1000 / 10
    if kind == "boolean":
        return int(seed[:1], 16) % 2 == 0
    if kind == "string":
        return f"emulated {seed[:8]}"
    return None


def _structured(body: dict[str, Any], seed: str) -> str | None:
    """The JSON text a chat (``response_format``) or Responses (``text.format``) request asks for."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return json.dumps({"answer": f"emulated {seed[:8]}"})
    if fmt.get("type") == "json_schema":
        inner = fmt.get("json_schema")
        holder: dict[str, Any] = inner if isinstance(inner, dict) else fmt
        return json.dumps(_from_schema(holder.get("schema"), seed))
    return None


def answer(endpoint: str, custom_id: str, body: dict[str, Any], created: int) -> dict[str, Any]:
    """The response body the emulated model gives to one request line."""
    h = digest(endpoint, body)
    text = _structured(body, h) or f"Emulated answer {h[:12]} to {custom_id}."
    if endpoint == "/v1/embeddings":
        raw = body.get("input", "")
        inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        dims = body.get("dimensions")
        dims = dims if isinstance(dims, int) and not isinstance(dims, bool) and 0 < dims <= 4096 else 8
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _embedding(item, dims)}
                for i, item in enumerate(inputs)
            ],
            "model": _model(body, "emulator-embedding"),
            "usage": {"prompt_tokens": _tokens(raw), "total_tokens": _tokens(raw)},
        }
    if endpoint == "/v1/images/generations":
        n = body.get("n")
        n = n if isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 10 else 1
        prompt = body.get("prompt")
        if body.get("response_format") == "b64_json":
            data = [{"b64_json": _PNG_1X1, "revised_prompt": prompt} for _ in range(n)]
        else:
            data = [
                {"url": f"https://emulator.mka1.invalid/images/{h[:16]}-{i}.png", "revised_prompt": prompt}
                for i in range(n)
            ]
        return {"created": created, "data": data}
    usage_in, usage_out = _tokens(body), _tokens(text)
    if endpoint == "/v1/responses":
        return {
            "id": f"resp_{h[:24]}",
            "object": "response",
            "created_at": created,
            "status": "completed",
            "model": _model(body, "emulator-model"),
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{h[24:48]}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": usage_in,
                "output_tokens": usage_out,
                "total_tokens": usage_in + usage_out,
            },
        }
    return {
        "id": f"chatcmpl-{h[:24]}",
        "object": "chat.completion",
        "created": created,
        "model": _model(body, "emulator-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage_in,
            "completion_tokens": usage_out,
            "total_tokens": usage_in + usage_out,
        },
    }
