"""Every error leaves the API as ``{"error": {"code", "message", "details"}}`` with the right status.

Client mistakes are 4xx; only the store being unreachable (503) or a bug (500) is 5xx, and a
response never carries a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outlast.errors import (
    ConfigError,
    InputRejected,
    InputValidationError,
    NotWaiting,
    OutlastError,
    RunNotFound,
    SerializationError,
    StoreUnavailable,
    WorkflowNotFound,
)

log = logging.getLogger("outlast.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An error the API answers with on purpose. (An HTTPException so FastAPI re-raises it untouched
    even from inside body parsing, where other exceptions become a generic 400.)"""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.details = details


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _outlast_error(exc: OutlastError) -> tuple[int, str, Any]:
    if isinstance(exc, RunNotFound):
        return 404, "run_not_found", None
    if isinstance(exc, WorkflowNotFound):
        return 404, "workflow_not_found", None
    if isinstance(exc, InputRejected):  # (before its base class InputValidationError)
        # ``where`` is a "/"-joined path into the value; loc is a list, as for every other 422.
        loc = [] if exc.where == "(the value)" else exc.where.split("/")
        return 422, "invalid_input", [{**err, "loc": loc} for err in exc.errors]
    if isinstance(exc, InputValidationError):
        return 422, "invalid_input", exc.errors
    if isinstance(exc, NotWaiting):
        return 409, "not_waiting", {"status": exc.status, "waiting_for": exc.waiting_for}
    if isinstance(exc, ConfigError | SerializationError):
        return 400, "bad_request", None
    if isinstance(exc, StoreUnavailable):
        return 503, "store_unavailable", None
    return 500, "internal_error", None


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    path = request.url.path
    if exc.status_code == 404 and len(path) > 1 and path.endswith("/"):
        message = f"no route {path}: paths take no trailing slash (try {path.rstrip('/') or '/'})"
    return error_response(exc.status_code, code, message, None, exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in exc.errors()
    ]
    if any(err["type"] == "json_invalid" for err in errors):
        return error_response(400, "invalid_json", "the request body is not valid JSON", errors)
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return error_response(422, "validation_error", f"invalid request: {summary}", errors)


async def _on_outlast_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OutlastError)
    status, code, details = _outlast_error(exc)
    if status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    message = str(exc) if status < 500 or status == 503 else "internal error"
    return error_response(status, code, message, details)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s: unexpected error", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(OutlastError, _on_outlast_error)
    app.add_exception_handler(Exception, _on_unexpected)


class BodyLimitMiddleware:
    """413 for a body over ``max_body`` bytes: by Content-Length up front, and by counting the bytes
    actually received (a chunked or lying client sends no or a wrong Content-Length). 408 when the
    body stops arriving for ``timeout`` seconds (``Content-Length: 1000`` and 2 bytes sent would
    otherwise hold the connection for ever)."""

    def __init__(self, app: ASGIApp, max_body: int, timeout: float = 30.0) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    response = error_response(400, "bad_request", "Content-Length is not a number")
                    await response(scope, receive, send)
                    return
                if int(value) > self.max_body:
                    await self._too_large()(scope, receive, send)
                    return
        received = 0
        complete = False  # once the body is in, receive() only waits for a disconnect: no timeout

        async def limited() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(self.timeout):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    408,
                    "request_timeout",
                    f"the request body stopped arriving: nothing for {self.timeout:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise ApiError(413, "payload_too_large", self._message())
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body over the limit of {self.max_body} bytes"

    def _too_large(self) -> JSONResponse:
        return error_response(413, "payload_too_large", self._message(), {"max_body": self.max_body})
