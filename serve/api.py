"""FastAPI routes of the gateway: parse and validate, then hand over to :class:`serve.serving.ChatService`."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Header, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.errors import ApiError, RequestIdMiddleware, api_error_handler, http_error_handler, parse_body, read_json
from serve.protocol import (ChatCompletionRequest, ChatCompletionResponse, ErrorResponse, ModelList, TaskRequest,
                            TaskResponse, TierwiseInfo)
from serve.serving import ChatService

app = FastAPI(title="Tierwise", summary="OpenAI-compatible gateway that answers each request on the cheapest "
                                        "tier that will answer it well")
app.add_exception_handler(ApiError, api_error_handler)
app.add_exception_handler(StarletteHTTPException, http_error_handler)
app.add_middleware(RequestIdMiddleware)

ConversationId = Header(None, alias="X-Conversation-Id")
# Bodies are read by hand (size limit, UTF-8, depth, surrogates) and validated by parse_body, so that every
# bad one is an OpenAI-shaped 400; these declare them in /openapi.json all the same.
BODY_MODELS = (ChatCompletionRequest, TaskRequest)
ERRORS = {400: {"model": ErrorResponse, "description": "Bad request (OpenAI error shape)"},
          503: {"model": ErrorResponse, "description": "A needed part is unavailable; Retry-After says when to retry"}}


def _body_doc(model) -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _openapi() -> dict:
    """The OpenAPI document with the hand-parsed request bodies and OpenAI-shaped errors (never FastAPI's
    422, which this API does not send)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    for path in schema["paths"].values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


app.openapi = _openapi

# Serve unpickles its own copy of ``app`` in each replica, so app.state set by the deployment would land on
# another object; the route functions, imported by reference, do share this module's globals.
_service: ChatService | None = None


def bind_service(chat_service: ChatService) -> None:
    """Give this replica's routes their service (the Gateway deployment calls it once)."""
    global _service
    _service = chat_service


def service(_: Request) -> ChatService:
    """The replica's service."""
    if _service is None:
        raise ApiError(503, "the gateway is starting", "service_unavailable", headers={"Retry-After": "1"})
    return _service


async def caller_tenant(request: Request,
                        authorization: str | None = Header(None, include_in_schema=False)) -> str:
    """The tenant whose conversations this request may read and write."""
    return await service(request).tenant(authorization)


Tenant = Depends(caller_tenant)


async def _body(request: Request, model):
    return parse_body(model, await read_json(request, service(request).settings.http.max_body_bytes))


@app.post("/v1/chat/completions", openapi_extra=_body_doc(ChatCompletionRequest), responses={
    200: {"model": ChatCompletionResponse, "description": "The completion; with `stream: true`, server-sent events of "
                                                           "chat.completion.chunk objects",
          "content": {"text/event-stream": {}}}, 404: ERRORS[400] | {"description": "Unknown model"},
    502: {"model": ErrorResponse, "description": "The answering tier failed"}, **ERRORS})
async def chat_completions(request: Request, conversation_id: str | None = ConversationId,
                           tenant: str = Tenant) -> Response:
    """OpenAI chat completions; ``model: auto`` routes, a concrete model name pins the tier."""
    body = await _body(request, ChatCompletionRequest)
    return await service(request).chat(body, conversation_id, tenant)


@app.post("/v1/route", response_model=TierwiseInfo, response_model_exclude_none=True,
          openapi_extra=_body_doc(ChatCompletionRequest), responses=ERRORS)
async def route(request: Request, conversation_id: str | None = ConversationId, tenant: str = Tenant) -> TierwiseInfo:
    """The routing decision for a chat completion body, with its scores; nothing is generated."""
    body = await _body(request, ChatCompletionRequest)
    return await service(request).route(body, conversation_id, tenant)


@app.get("/v1/models", response_model=ModelList, response_model_exclude_none=True, dependencies=[Tenant])
async def models(request: Request) -> ModelList:
    """Router aliases and concrete models."""
    return service(request).list_models()


@app.post("/v1/tasks/{task}", response_model=TaskResponse, response_model_exclude_none=True,
          openapi_extra=_body_doc(TaskRequest), responses=ERRORS | {404: ERRORS[400] | {"description": "Unknown task"}},
          dependencies=[Tenant])
async def task(task: str, request: Request) -> TaskResponse:
    """Tier-1 tasks without routing: sentiment, entities, faq, intent."""
    body = await _body(request, TaskRequest)
    return await service(request).task(task, body.text)


@app.get("/healthz")
async def healthz() -> dict:
    """Liveness: the replica answers."""
    return {"status": "ok"}


@app.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: store, router and tier 1 answer."""
    return JSONResponse(await service(request).readiness())


@app.get("/metrics")
async def prometheus_metrics() -> Response:
    """Prometheus exposition of this replica's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
