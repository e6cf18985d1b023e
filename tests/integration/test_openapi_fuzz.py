"""schemathesis over the gateway's own OpenAPI document, against the running application on 127.0.0.1:
generated requests (valid and invalid) never get a 5xx, and every response has a documented status, content
type and a body that matches its documented schema.

The document is taken from the FastAPI app at collection, so each operation is its own test; a separate test
checks that the running gateway serves that same document at /openapi.json."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from serve.api.routes import app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Bounded, so the suite's time stays predictable: every operation gets this many generated cases.
EXAMPLES = 25

schema = schemathesis.openapi.from_dict(app.openapi())


def test_the_gateway_serves_the_document_under_test(base_url):
    assert httpx.get(f"{base_url}/openapi.json", timeout=10).json() == app.openapi()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_every_documented_operation_holds_its_contract(case, base_url):
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
