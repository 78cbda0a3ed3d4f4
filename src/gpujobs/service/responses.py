"""The envelope every JSON answer wears, and the mapping of errors onto it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GpujobsError, http_status
from ..models import JobSpec
from .audit import audit_refusal

log = logging.getLogger(__name__)
_JSON = "application/json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def envelope(
    data: BaseModel | dict[str, Any] | bytes | None,
    message: str,
    status: int = 200,
    success: bool = True,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``{"success", "data", "message", "timestamp"}``, serialised without a second pass through pydantic
    (``data`` as bytes: JSON already made)."""
    if isinstance(data, bytes):
        body = data
    elif isinstance(data, BaseModel):
        body = data.model_dump_json().encode()
    else:
        body = json.dumps(data, default=str).encode()
    tail = json.dumps({"message": message, "timestamp": _now()})[1:]
    # One join, one copy: ``body`` may be a 5 MB gpu-status answer, asked for many times a second.
    content = b"".join(
        (b'{"success":', b"true" if success else b"false", b',"data":', body, b",", tail.encode())
    )
    return Response(content=content, status_code=status, media_type=_JSON, headers=headers)


def failure(
    message: str, status: int, data: dict[str, Any] | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    return envelope(data, message, status=status, success=False, headers=headers)


async def on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GpujobsError)
    data = {"field": exc.field} if exc.field else None
    status = http_status(exc)
    if status in (401, 403):
        audit_refusal(request, status, exc.message)
    return failure(exc.message, status, data)


_SPEC_FIELDS = ", ".join(JobSpec.model_fields)


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
    field = ".".join(location) or None
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "extra_forbidden":
        message = f"unknown field {field!r}; the fields are: {_SPEC_FIELDS}"
    elif kind == "json_invalid":
        message = "the body is not valid JSON"
        field = None
    elif kind == "missing" and field is None:
        message = "a JSON body is required"
    elif kind == "model_attributes_type" or kind == "dict_type":
        message = "the body must be a JSON object"
    elif field:
        message = f"{field}: {message}"
    return {"field": field, "message": message}


async def on_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_describe(dict(error)) for error in exc.errors()]
    summary = "; ".join(error["message"] for error in errors) or "invalid request"
    return failure(summary, 422, {"errors": errors, "field": errors[0]["field"] if errors else None})


async def on_http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    messages = {404: "no such path", 405: "method not allowed on this path"}
    # A 405 carries the methods the path allows (Allow, RFC 9110).
    return failure(messages.get(exc.status_code, str(exc.detail)), exc.status_code, headers=exc.headers)


async def on_unexpected(_request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return failure("internal error in gpujobs; the service log has the details", 500)


class BodyLimit:
    """Answer 413 to request bodies over ``limit`` bytes, whether or not they say their length."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # An HTTPException passes FastAPI's body parsing untouched and reaches on_http_error.
                    raise HTTPException(413, detail=self._message)
            return message

        await self.app(scope, counting_receive, send)

    @property
    def _message(self) -> str:
        return f"the request body is larger than {self.limit} bytes"

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await failure(self._message, 413)(scope, receive, send)
