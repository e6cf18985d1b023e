"""OpenAI-style errors: every failure the client can act on is an :class:`ApiError` with a 4xx/5xx."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from serve import metrics
from serve.api.protocol import ErrorDetail, ErrorResponse, TierwiseInfo

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class ApiError(Exception):
    """An error answered with an OpenAI-style body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", *, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None, tierwise: TierwiseInfo | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers, self.tierwise = headers or {}, tierwise

    def body(self) -> dict:
        """The JSON body."""
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code,
                             tierwise=self.tierwise)
        return ErrorResponse(error=detail).model_dump(exclude_none=True)


async def api_error_handler(_: Request, exc: ApiError) -> JSONResponse:
    """Render an :class:`ApiError` and count it."""
    metrics.ERRORS.labels(str(exc.status), exc.code or exc.type).inc()
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error_handler(_: Request, exc) -> JSONResponse:
    """Starlette's own 404/405 in the same shape."""
    err = ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
    return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


def unexpected_error(exc: Exception, request_id: str) -> JSONResponse:
    """Anything no handler took: a 500 in the OpenAI shape that names the request id to quote, and nothing
    of the exception itself (it is logged with that id)."""
    log.error("unexpected error in request %s", request_id, exc_info=exc)
    metrics.ERRORS.labels("500", "internal_error").inc()
    err = ApiError(500, f"internal error; quote request id {request_id} when reporting it", "server_error",
                   code="internal_error")
    return JSONResponse(err.body(), status_code=500)


class RequestIdMiddleware:
    """Honours a client's ``X-Request-Id`` (letters, digits and ``._:-``, up to 128) or makes one, returns it
    on every response, and answers an unexpected error with :func:`unexpected_error`. Plain ASGI, so streamed
    responses pass through untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else f"req_{uuid.uuid4().hex}"
        # Routes read it as request.state.request_id (the usage ledger records each request id once).
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Once a response has started (a stream), its status is sent: the server closes it.
            if started:
                raise
            await unexpected_error(exc, request_id)(scope, receive, send_with_id)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing an oversized one with a 413 as soon as it passes ``max_bytes`` (a client need not
    send a Content-Length); kept on the request, where Starlette's ``body()`` finds it for FastAPI."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, f"request body of {length} bytes exceeds the limit of {max_bytes} bytes",
                       code="body_too_large")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise ApiError(413, f"request body exceeds the limit of {max_bytes} bytes", code="body_too_large")
    # Starlette caches the body in this attribute; the stream is consumed, so FastAPI's own read finds it here.
    request._body = bytes(raw)
    return request._body


def check_json(raw: bytes) -> object:
    """``raw`` as JSON, refusing non-UTF-8, malformed, too deeply nested and unencodable bodies with a 400."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start})", code="invalid_utf8") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       code="invalid_json") from exc
    except RecursionError as exc:
        raise ApiError(400, "request body is nested too deeply to parse", code="invalid_json") from exc
    # JSON may spell a lone UTF-16 surrogate as an escape; such a string cannot be stored or echoed
    # as UTF-8 later, so it is refused here. Only bodies that contain a surrogate escape pay for the check.
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ApiError(400, "request body contains an unpaired UTF-16 surrogate escape, which is not "
                                "valid Unicode", code="invalid_unicode") from exc
    return data


def _data_path(loc: tuple, data: object, missing: bool) -> tuple:
    """``loc`` less the steps that are not keys or indexes of ``data``.

    Pydantic's locations name union members and discriminator tags too
    (``messages.0.content.list[...].0.image_url.image_url.url``); a client knows only its own JSON. The
    last step stays when it names a missing field.
    """
    path, node = [], data
    for n, step in enumerate(loc):
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        elif not (missing and n == len(loc) - 1):
            continue
        path.append(step)
    return tuple(path)


def parse_body(model: type[M], data: object) -> M:
    """Validate ``data`` against ``model``; the most specific problem becomes a 400 naming the field."""
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_type")
    try:
        return model.model_validate(data)
    except RecursionError as exc:
        raise ApiError(400, "request body is nested too deeply", code="invalid_value") from exc
    except ValidationError as exc:
        raise invalid(exc.errors(), data) from exc


def invalid(errors: list[dict], data: object) -> ApiError:
    """The 400 for validation ``errors`` of ``data``: the most specific problem, naming its field."""
    problems = {}
    for err in errors:
        path = _data_path(tuple(err["loc"]), data, err["type"] == "missing")
        problems.setdefault(path, err["msg"].removeprefix("Value error, "))
    # A value that fits no member of a union fails every member; the member it got furthest into
    # says best what is wrong (for content parts: the part, not "should be a valid string").
    path = max(problems, key=len)
    param = ".".join(str(p) for p in path) or None
    others = [p for p in problems if p != path[: len(p)]]
    more = f" (and {len(others)} more problems)" if others else ""
    return ApiError(400, f"{param or 'body'}: {problems[path]}{more}", param=param, code="invalid_value")


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's validation of a typed body, query or header, answered as :func:`parse_body` answers: a 400 in
    the OpenAI shape naming the field (never FastAPI's 422)."""
    body_errors = [{**e, "loc": tuple(e["loc"][1:])} for e in exc.errors() if e["loc"][:1] == ("body",)]
    if body_errors:
        data = exc.body
        err = (ApiError(400, "request body must be a JSON object", code="invalid_type")
               if not isinstance(data, dict) else invalid(body_errors, data))
    else:
        first = exc.errors()[0]
        where, name = first["loc"][0], first["loc"][-1]
        err = ApiError(400, f"{where} parameter {name}: {first['msg']}", param=str(name), code="invalid_value")
    return await api_error_handler(request, err)
