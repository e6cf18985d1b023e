"""schemathesis over the gateway's own /openapi.json, against the running application on 127.0.0.1: generated
requests (valid and invalid) never get a 5xx, and every response has a documented status, content type and
a body that matches its documented schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Bounded, so the suite's time stays predictable: every operation gets this many generated cases.
EXAMPLES = 25


@pytest.fixture(scope="session")
def api_schema(base_url):
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_every_documented_operation_holds_its_contract(case, base_url):
    # Streams are read whole: the check is on the status and content type, which the first bytes settle.
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
