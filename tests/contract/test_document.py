"""The OpenAPI document itself says what API.md promises, so that generated clients need no casts.

These rules hold for every operation, whichever feature adds it: errors are Problem documents
under application/problem+json, validation errors are documented as 422 Problems (FastAPI's
HTTPValidationError appears nowhere), protected operations document their 401 and use the one
OAuth2 password scheme, and no operation takes `Authorization` as a plain header parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.contract.document import schema

DOCUMENT: dict[str, Any] = schema.raw_schema
METHODS = {"get", "post", "put", "patch", "delete"}
PROBLEM_REF = "#/components/schemas/Problem"


def _operations() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


OPERATIONS = dict(_operations())
# /ready answers 503 with its own application/json document (API.md, Operations).
NOT_PROBLEMS = {("GET /ready", "503")}


def _error_responses() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for label, operation in OPERATIONS.items():
        for status, response in operation["responses"].items():
            if status[0] in "45" and (label, status) not in NOT_PROBLEMS:
                yield label, status, response


class TestErrors:
    def test_fastapi_validation_schemas_appear_nowhere(self) -> None:
        schemas = DOCUMENT.get("components", {}).get("schemas", {})
        assert "HTTPValidationError" not in schemas
        assert "ValidationError" not in schemas
        assert "HTTPValidationError" not in str(DOCUMENT)

    @pytest.mark.parametrize(
        ("label", "status", "response"),
        list(_error_responses()),
        ids=[f"{label} {status}" for label, status, _ in _error_responses()],
    )
    def test_every_error_response_is_a_problem(
        self, label: str, status: str, response: dict[str, Any]
    ) -> None:
        assert list(response["content"]) == ["application/problem+json"]
        assert response["content"]["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}

    @pytest.mark.parametrize("label", list(OPERATIONS))
    def test_operations_with_input_document_their_422(self, label: str) -> None:
        operation = OPERATIONS[label]
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in operation["responses"]

    def test_the_problem_schema_has_the_envelope_members(self) -> None:
        problem = DOCUMENT.get("components", {}).get("schemas", {}).get("Problem")
        if problem is None:
            pytest.skip("no operation documents an error yet")
        required = set(problem["required"])
        assert {"type", "title", "status", "code", "request_id", "errors"} <= required
        assert problem.get("additionalProperties", True) is not False  # extension members


class TestSecurity:
    @pytest.mark.parametrize("label", list(OPERATIONS))
    def test_authorization_is_never_a_plain_header_parameter(self, label: str) -> None:
        names = {param["name"].lower() for param in OPERATIONS[label].get("parameters", [])}
        assert "authorization" not in names

    @pytest.mark.parametrize(
        "label",
        [
            label
            for label, operation in OPERATIONS.items()
            # `{}` among the requirements: the token is optional (OptionalUser), never a 401.
            if operation.get("security") and {} not in operation["security"]
        ],
    )
    def test_protected_operations_document_their_401(self, label: str) -> None:
        assert "401" in OPERATIONS[label]["responses"]

    def test_there_is_one_oauth2_password_scheme(self) -> None:
        schemes = DOCUMENT.get("components", {}).get("securitySchemes", {})
        if not schemes:
            pytest.skip("no operation needs a token yet")
        assert len(schemes) == 1
        (scheme,) = schemes.values()
        assert scheme["type"] == "oauth2"
        assert scheme["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"


class TestOperations:
    def test_operations_routes_are_documented_and_metrics_is_not(self) -> None:
        assert {"GET /health", "GET /ready"} <= set(OPERATIONS)
        assert "/metrics" not in DOCUMENT["paths"]

    def test_ready_documents_its_503(self) -> None:
        assert "503" in OPERATIONS["GET /ready"]["responses"]

    @pytest.mark.parametrize("label", list(OPERATIONS))
    def test_business_routes_live_under_api_v1(self, label: str) -> None:
        path = label.split(" ", 1)[1]
        assert path in {"/health", "/ready"} or path.startswith("/api/v1/")
