"""Request and response bodies: reading with a size limit, parsing JSON and CSV, compact JSON out."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from include.mlops.serving.validation import RequestTooLarge, ValidationFailed, error


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes; values JSON does not know are written as text."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes, announced or not."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestTooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
        except ValueError:
            raise ValidationFailed([error(("header", "content-length"), "not an integer", "value_error")]) from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The JSON of a body; an empty or malformed one is a 422 naming the body."""
    if not body:
        raise ValidationFailed([error(("body",), "empty body: expected JSON", "value_error.missing")])
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValidationFailed([error(("body",), f"invalid JSON: {exc}"[:300], "value_error.jsondecode")]) from None


def parse_csv(body: bytes, text_key: str | None = None) -> list[dict[str, Any]]:
    """CSV rows as records; `text_key` (a string entity key) is read as text, so "00123" stays
    "00123" and an empty cell means no id."""
    import io

    import pandas as pd

    try:
        df = pd.read_csv(io.BytesIO(body), dtype={text_key: str} if text_key else None)
    except Exception as exc:
        raise ValidationFailed([error(("body",), f"invalid CSV: {exc}"[:300], "value_error.csv")]) from None
    if text_key in df.columns:
        df[text_key] = df[text_key].astype(object).where(df[text_key].notna(), None)
    return df.to_dict("records")
