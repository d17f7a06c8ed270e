"""The OpenAPI document itself says what API.md promises, so that generated clients need no casts.

These rules hold for every operation, whichever feature adds it: errors are Problem documents
under application/problem+json, validation errors are documented as 422 Problems (FastAPI's
HTTPValidationError appears nowhere), protected operations document their 401 and use the one
OAuth2 password scheme, and no operation takes `Authorization` as a plain header parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
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
        """People: one OAuth2 password scheme. Organization API keys are the second scheme
        (HTTP bearer, API.md), on the routes that take them."""
        schemes = DOCUMENT.get("components", {}).get("securitySchemes", {})
        if not schemes:
            pytest.skip("no operation needs a token yet")
        oauth2 = [scheme for scheme in schemes.values() if scheme["type"] == "oauth2"]
        assert len(oauth2) == 1
        assert set(schemes) <= {"OAuth2PasswordBearer", "ApiKey"}
        assert schemes.get("ApiKey", {"scheme": "bearer"})["scheme"] == "bearer"
        (scheme,) = oauth2
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


DOCS_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
OPERATION_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
# A route table row of docs/api.md: | METHOD | /path | ... | `operation-id` | ... |
GUIDE_ROW = re.compile(r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*(/\S*)\s*\|(.*)$")


def _guide_operation_ids() -> dict[str, str]:
    """`METHOD /path` -> the operationId that docs/api.md gives for it (a cell `` `tag-x` ``)."""
    found: dict[str, str] = {}
    for line in DOCS_GUIDE.read_text(encoding="utf-8").splitlines():
        match = GUIDE_ROW.match(line)
        if not match:
            continue
        method, path, rest = match.groups()
        for cell in (cell.strip() for cell in rest.split("|")):
            name = cell.strip("`")
            if cell == f"`{name}`" and "-" in name and OPERATION_ID.match(name):
                found[f"{method} {path}"] = name
                break
    return found


class TestClientNames:
    """Generated clients get readable, stable names: `productsList`, not
    `listProductsApiV1ProductsGet`; `TokenForm`, not `Body_token_api_v1_auth_token_post`."""

    @pytest.mark.parametrize("label", list(OPERATIONS))
    def test_every_operation_id_is_tag_dash_action(self, label: str) -> None:
        operation = OPERATIONS[label]
        operation_id = operation["operationId"]
        assert OPERATION_ID.match(operation_id), operation_id
        tag = operation["tags"][0].lower().replace(" ", "-")
        assert operation_id.startswith(f"{tag}-"), (operation_id, tag)

    def test_operation_ids_are_unique(self) -> None:
        ids = [operation["operationId"] for operation in OPERATIONS.values()]
        assert len(ids) == len(set(ids))

    def test_the_guide_lists_every_operation_with_its_id(self) -> None:
        """docs/api.md pins the ids: renaming an endpoint function must not rename a client's
        method behind its back. A new route gets a row in the guide's route tables (with its
        operationId); a route that wants another id sets `operation_id=` on its decorator."""
        guide = _guide_operation_ids()
        actual = {label: operation["operationId"] for label, operation in OPERATIONS.items()}
        missing = sorted(label for label in actual if label not in guide)
        assert not missing, f"routes without a row (and operationId) in docs/api.md: {missing}"
        wrong = {
            label: (guide[label], actual[label])
            for label in actual
            if guide[label] != actual[label]
        }
        assert not wrong, f"docs/api.md id != the document's id: {wrong}"

    def test_no_schema_has_a_generated_name(self) -> None:
        names = list(DOCUMENT["components"]["schemas"])
        assert [name for name in names if name.startswith("Body_")] == []
        assert "TokenForm" in names

    def test_every_tag_is_described(self) -> None:
        used = {tag for operation in OPERATIONS.values() for tag in operation["tags"]}
        described = {tag["name"]: tag.get("description", "") for tag in DOCUMENT["tags"]}
        assert used == set(described)
        assert all(len(description) > 20 for description in described.values()), described


EXAMPLED = [
    "RegisterIn",
    "LoginIn",
    "TokenPair",
    "UserOut",
    "ProfileUpdate",
    "PasswordChangeIn",
    "ProductCreate",
    "ProductOut",
    "OrderCreate",
    "OrderOut",
    "Problem",
]


class TestExamples:
    @pytest.mark.parametrize("name", EXAMPLED)
    def test_main_schemas_carry_an_example(self, name: str) -> None:
        assert DOCUMENT["components"]["schemas"][name].get("examples")

    @pytest.mark.parametrize(
        "name",
        [
            name
            for name, component in DOCUMENT["components"]["schemas"].items()
            if component.get("examples")
        ],
    )
    def test_every_example_is_valid_against_its_schema(self, name: str) -> None:
        """An example a person copies must be accepted (requests) or be what is sent
        (responses)."""
        resolver_document = {"components": DOCUMENT["components"]}
        component = {**DOCUMENT["components"]["schemas"][name], **resolver_document}
        component.pop("examples")
        # schemathesis' own validator (a dependency of it), formats checked too.
        validator = jsonschema_rs.Draft202012Validator(component, validate_formats=True)
        for example in DOCUMENT["components"]["schemas"][name]["examples"]:
            errors = [error.message for error in validator.iter_errors(example)]
            assert not errors, (name, example, errors)


class TestDeclaredStatuses:
    """The statuses a route's shape makes real are declared (tests/contract/test_statuses.py
    drives each of them)."""

    @pytest.mark.parametrize(
        "label",
        [label for label, operation in OPERATIONS.items() if "requestBody" in operation],
    )
    def test_every_route_with_a_body_declares_413(self, label: str) -> None:
        assert "413" in OPERATIONS[label]["responses"]

    @pytest.mark.parametrize("label", list(OPERATIONS))
    def test_415_is_declared_exactly_by_json_routes(self, label: str) -> None:
        # And by the image upload: a file that is not JPEG, PNG or WebP is 415 (API.md).
        body = OPERATIONS[label].get("requestBody", {}).get("content", {})
        takes_typed_body = "application/json" in body or "multipart/form-data" in body
        assert ("415" in OPERATIONS[label]["responses"]) == takes_typed_body

    @pytest.mark.parametrize("label", list(OPERATIONS))
    def test_every_business_route_declares_503(self, label: str) -> None:
        """Each needs PostgreSQL or Redis (at least for the token check or the catalog read);
        only /health touches nothing."""
        assert ("503" in OPERATIONS[label]["responses"]) == (label != "GET /health")
