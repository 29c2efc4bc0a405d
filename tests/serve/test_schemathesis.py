"""Schemathesis against the app's own OpenAPI document, over real HTTP: no input it derives from
the document (valid or deliberately invalid) may produce a server error, and every answer must
match what the document says (status codes, content types, headers, body schemas).

Bounded: 100 examples per generation mode and database (400 in all), so it runs in seconds.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.serve.conftest import LiveServer

EXAMPLES = 100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_from_the_openapi_document(live: LiveServer, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operation = schema["/api/export"]["GET"]
    tokens = st.sampled_from(
        [
            None,
            live.token(live.ids.admin),
            live.token(live.ids.parent, "PARENT"),
            live.token(live.ids.child, "LEARNER"),
        ]
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode), token=tokens)
    def run(case: schemathesis.Case, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS)

    run()


def test_every_operation_is_fuzzed(live: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    paths = {result.ok().path for result in schema.get_all_operations()}
    assert paths == {"/api/export", "/healthz", "/api/export/view", "/api/export/family"}
    health = schema["/healthz"]["GET"]

    @settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=health.as_strategy())
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=live.url, checks=CHECKS)

    run()


READABLE_EXAMPLES = 10
"""The readable routes share /api/export's checks (fuzzed above at length): a few examples each,
with tokens that never get a whole family zip, so it stays within seconds."""


@pytest.mark.parametrize("path", ["/api/export/view", "/api/export/family"])
def test_the_readable_routes_are_fuzzed(live: LiveServer, path: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operation = schema[path]["GET"]
    tokens = st.sampled_from(
        [None, live.token(live.ids.admin), live.token(live.ids.child, "LEARNER")]
    )

    @settings(
        max_examples=READABLE_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(GenerationMode.NEGATIVE), token=tokens)
    def run(case: schemathesis.Case, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS)

    run()
