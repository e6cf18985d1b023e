"""FastAPI routes of the gateway: typed bodies, the caller, then a hand-over to the serving class of their API
surface (``serve/serving_*.py``)."""

from __future__ import annotations

import datetime as dt
from email.message import Message

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.api.errors import (
    ApiError,
    RequestIdMiddleware,
    api_error_handler,
    check_json,
    http_error_handler,
    read_body,
    validation_error_handler,
)
from serve.api.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    ModelList,
    TaskRequest,
    TaskResponse,
    TierwiseInfo,
)
from serve.api.turns import Caller
from serve.services import GatewayServices
from serve.tenancy.ledger import UsageReport


class CheckedBodyRoute(APIRoute):
    """A route whose JSON body is read and checked before FastAPI parses it: an oversized body is a 413 as soon
    as it passes ``http.max_body_bytes``, and bad UTF-8, malformed or too deeply nested JSON and lone
    surrogates are 400s in the OpenAI shape. FastAPI then validates the typed body (which /openapi.json
    documents) and :func:`serve.api.errors.validation_error_handler` answers its errors the same way."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method == "POST":
                content_type = request.headers.get("content-type")
                if content_type:
                    parsed = Message()
                    parsed["content-type"] = content_type
                    subtype = parsed.get_content_subtype()
                    if parsed.get_content_maintype() != "application" or not (
                            subtype == "json" or subtype.endswith("+json")):
                        raise ApiError(415, f"Content-Type {content_type!r}: send the body as application/json",
                                       code="unsupported_media_type")
                check_json(await read_body(request, services(request).settings.http.max_body_bytes))
            try:
                return await handler(request)
            except RecursionError as exc:
                raise ApiError(400, "request body is nested too deeply", code="invalid_value") from exc

        return checked


app = FastAPI(title="Tierwise", summary="OpenAI-compatible gateway that answers each request on the cheapest "
                                        "tier that will answer it well")
app.router.route_class = CheckedBodyRoute
app.add_exception_handler(ApiError, api_error_handler)
app.add_exception_handler(RequestValidationError, validation_error_handler)
app.add_exception_handler(StarletteHTTPException, http_error_handler)
app.add_middleware(RequestIdMiddleware)

ConversationId = Header(None, alias="X-Conversation-Id")
ERROR = {"model": ErrorResponse}
ERRORS = {400: ERROR | {"description": "Bad request (OpenAI error shape)"},
          401: ERROR | {"description": "Missing, invalid or revoked API key"},
          503: ERROR | {"description": "A needed part is unavailable; Retry-After says when to retry"}}
# Every JSON-body route: the body is checked before it is parsed.
BODY_ERRORS = {413: ERROR | {"description": "Body or a message too large"},
               415: ERROR | {"description": "The body is not sent as application/json"}}
UNKNOWN_MODEL = {404: ERROR | {"description": "Unknown model"}}
LIMITED = {429: ERROR | {"description": "A tenant limit was reached (the error's param names it); Retry-After says "
                                        "when to retry"}}


def _without_422(schema: dict) -> dict:
    """The OpenAPI document less FastAPI's 422 (this API answers validation errors with a 400)."""
    for path in schema["paths"].values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(unused, None)
    return schema


def _openapi() -> dict:
    if not app.openapi_schema:
        app.openapi_schema = _without_422(FastAPI.openapi(app))
    return app.openapi_schema


app.openapi = _openapi

# Serve unpickles its own copy of ``app`` in each replica, so app.state set by the deployment would land on
# another object; the route functions, imported by reference, do share this module's globals.
_services: GatewayServices | None = None


def bind_services(gateway_services: GatewayServices) -> None:
    """Give this replica's routes their services (the Gateway deployment calls it once)."""
    global _services
    _services = gateway_services


def services(_: Request) -> GatewayServices:
    """The replica's services."""
    if _services is None:
        raise ApiError(503, "the gateway is starting", "service_unavailable", headers={"Retry-After": "1"})
    return _services


async def caller(request: Request, authorization: str | None = Header(None, include_in_schema=False)) -> Caller:
    """Who is calling: the tenant whose conversations this request may read and write, and its policy."""
    return await services(request).tenancy.caller(authorization)


Authenticated = Depends(caller)


@app.post("/v1/chat/completions", responses={
    200: {"model": ChatCompletionResponse, "description": "The completion; with `stream: true`, server-sent events of "
                                                           "chat.completion.chunk objects",
          "content": {"text/event-stream": {}}},
    502: ERROR | {"description": "The answering tier failed, or every provider refused Tierwise"},
    **ERRORS, **BODY_ERRORS, **UNKNOWN_MODEL, **LIMITED})
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           conversation_id: str | None = ConversationId, who: Caller = Authenticated) -> Response:
    """OpenAI chat completions; ``model: auto`` routes, a concrete model name pins the tier."""
    return await services(request).chat.chat(body, conversation_id, who, request.state.request_id)


@app.post("/v1/route", response_model=TierwiseInfo, response_model_exclude_none=True,
          responses=ERRORS | BODY_ERRORS | UNKNOWN_MODEL)
async def route(body: ChatCompletionRequest, request: Request, conversation_id: str | None = ConversationId,
                who: Caller = Authenticated) -> TierwiseInfo:
    """The routing decision for a chat completion body, with its scores; nothing is generated."""
    return await services(request).chat.route(body, conversation_id, who)


@app.get("/v1/models", response_model=ModelList, response_model_exclude_none=True, dependencies=[Authenticated],
         responses=ERRORS)
async def models(request: Request) -> ModelList:
    """Router aliases and concrete models."""
    return services(request).models.list_models()


@app.post("/v1/tasks/{task}", response_model=TaskResponse, response_model_exclude_none=True,
          responses=ERRORS | BODY_ERRORS | {404: ERROR | {"description": "Unknown task"}},
          dependencies=[Authenticated])
async def task(task: str, body: TaskRequest, request: Request) -> TaskResponse:
    """Tier-1 tasks without routing: sentiment, entities, faq, intent."""
    return await services(request).tasks.task(task, body.text)


@app.get("/v1/usage", response_model=UsageReport, responses=ERRORS | {
    403: ERROR | {"description": "Another tenant's usage, asked with a key that is not an admin key"}})
async def usage(request: Request, who: Caller = Authenticated,
                tenant: str | None = Query(None, pattern=r"^(\*|[A-Za-z0-9._-]{1,128})$",
                                           description="Default: the key's tenant; `*`: every tenant (admin keys)"),
                start: dt.date | None = Query(None, description="First UTC day (default: 29 days before end)"),
                end: dt.date | None = Query(None, description="Last UTC day (default: today)")) -> UsageReport:
    """Requests, tokens, cost, baseline cost and savings by tier, model and day, from the usage ledger."""
    return await services(request).usage.usage(who, tenant, start, end)


@app.get("/healthz")
async def healthz() -> dict:
    """Liveness: the replica answers."""
    return {"status": "ok"}


@app.get("/readyz", responses={503: ERRORS[503]})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: store, router and tier 1 answer."""
    return JSONResponse(await services(request).health.readiness())


@app.get("/metrics", response_class=PlainTextResponse,
         responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                          "description": "Prometheus text exposition format"}})
async def prometheus_metrics() -> Response:
    """Prometheus exposition of this replica's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
