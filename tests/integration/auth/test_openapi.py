"""The OpenAPI document describes the auth and users routes as API.md sets out."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

PUBLIC = {
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/token"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/verify-email"),
    ("post", "/api/v1/auth/forgot-password"),
    ("post", "/api/v1/auth/reset-password"),
}


@pytest.fixture
async def document(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        if path.startswith(("/api/v1/auth", "/api/v1/users"))
        for method, operation in item.items()
    ]


def test_components_are_named_and_typed(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"UserOut", "TokenPair", "UserPage", "Role", "Problem"} <= set(schemas)
    assert schemas["Role"]["enum"] == ["user", "admin"]
    assert schemas["TokenPair"]["properties"]["token_type"]["const"] == "bearer"
    assert set(schemas["TokenPair"]["required"]) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
    }
    assert schemas["UserOut"]["properties"]["id"]["format"] == "uuid"
    assert schemas["UserOut"]["properties"]["created_at"]["format"] == "date-time"
    assert "password_hash" not in schemas["UserOut"]["properties"]
    assert set(schemas["UserPage"]["required"]) == {
        "items",
        "total",
        "page",
        "page_size",
        "has_next",
    }
    assert "HTTPValidationError" not in str(document)


def test_oauth2_password_flow_is_attached_to_every_route_that_needs_a_token(
    document: dict[str, Any],
) -> None:
    scheme = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    for method, path, operation in operations(document):
        secured = operation.get("security") == [{"OAuth2PasswordBearer": []}]
        assert secured is ((method, path) not in PUBLIC), (method, path)
        parameters = [parameter["name"].lower() for parameter in operation.get("parameters", [])]
        assert "authorization" not in parameters


def test_every_error_is_a_problem_and_429_documents_retry_after(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = response["content"]
            assert list(content) == ["application/problem+json"], (method, path, status)
            assert content["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    login = document["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert {"401", "403", "422", "429"} <= set(login)
    assert login["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert "409" in document["paths"]["/api/v1/users/{user_id}"]["patch"]["responses"]
    register = document["paths"]["/api/v1/auth/register"]["post"]["responses"]
    assert "409" in register
    assert "Location" in register["201"]["headers"]
    assert register["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/UserOut")


def test_token_route_takes_the_oauth2_form(document: dict[str, Any]) -> None:
    body = document["paths"]["/api/v1/auth/token"]["post"]["requestBody"]
    assert list(body["content"]) == ["application/x-www-form-urlencoded"]
