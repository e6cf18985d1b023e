"""The HTTP surface's own error handling: JSON too deep to parse, unexpected errors, request ids."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from serve.api import routes as api
from serve.settings import TenantPolicy
from serve.api.turns import Caller


class _Tenancy:
    async def caller(self, authorization):
        return Caller("default", TenantPolicy())


class _Chat:
    async def chat(self, body, conversation_id, caller, request_id):
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")


@pytest.fixture()
def client(settings):
    """Just enough of the services for the routes: settings, the caller, and a chat that fails unexpectedly."""
    api.bind_services(SimpleNamespace(settings=settings, tenancy=_Tenancy(), chat=_Chat()))
    try:
        yield TestClient(api.app, raise_server_exceptions=False)
    finally:
        api.bind_services(None)


def test_json_nested_too_deep_is_a_400_in_the_openai_shape(client):
    deep = "[" * 100_000 + "]" * 100_000
    r = client.post("/v1/chat/completions", content='{"model": "auto", "messages": ' + deep + "}",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json" and "nested too deeply" in r.json()["error"]["message"]


def test_an_unexpected_error_is_a_500_that_names_the_request_id_and_leaks_nothing(client):
    r = client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"X-Request-Id": "client-req-42"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "client-req-42"
    error = r.json()["error"]
    assert error["type"] == "server_error" and "client-req-42" in error["message"]
    assert "hunter2" not in r.text and "RuntimeError" not in r.text


def test_every_response_carries_a_request_id(client):
    made = client.get("/healthz")
    assert made.headers["x-request-id"].startswith("req_")
    # An id that could smuggle header syntax is replaced, not echoed.
    assert client.get("/healthz", headers={"X-Request-Id": "bad id\tx"}).headers["x-request-id"].startswith("req_")
    assert client.get("/nope", headers={"X-Request-Id": "abc"}).headers["x-request-id"] == "abc"


def test_a_body_that_is_not_json_by_its_content_type_is_a_415(client):
    r = client.post("/v1/chat/completions", content="model=auto", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_typed_body_errors_are_openai_400s_naming_the_field(client):
    r = client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages.0.role" and r.json()["error"]["code"] == "invalid_value"
    r = client.post("/v1/chat/completions", json=[1, 2])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_type"


def test_openapi_documents_the_request_bodies_and_the_error_shape(client):
    import json
    import re

    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"), ("/v1/route", "ChatCompletionRequest"),
                        ("/v1/tasks/{task}", "TaskRequest")):
        operation = spec["paths"][path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
        assert "422" not in operation["responses"]
        assert operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert {"messages", "model"} <= set(schemas["ChatCompletionRequest"]["properties"])
    referenced = set(re.findall(r"#/components/schemas/([A-Za-z0-9_]+)", json.dumps(spec)))
    assert referenced <= set(schemas)
