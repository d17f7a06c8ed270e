"""The OpenAPI document: API keys are a second security scheme (HTTP bearer), on exactly the
routes that take them; the organization routes are documented with their errors."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

KEY_ROUTES = {
    ("post", "/api/v1/orders"),
    ("get", "/api/v1/orders/{order_id}"),
    ("get", "/api/v1/organizations/{org_id}/orders"),
}


@pytest.fixture
async def document(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    body: dict[str, Any] = response.json()
    return body


def test_api_keys_are_a_second_http_bearer_scheme(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"]["type"] == "http"
    assert schemes["ApiKey"]["scheme"] == "bearer"
    assert schemes["OAuth2PasswordBearer"]["type"] == "oauth2"


def test_only_the_routes_that_take_keys_declare_the_key_scheme(document: dict[str, Any]) -> None:
    with_keys = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if {"ApiKey": []} in operation.get("security", []):
                with_keys.add((method, path))
    assert with_keys == KEY_ROUTES
    org_orders = document["paths"]["/api/v1/organizations/{org_id}/orders"]["get"]
    assert org_orders["security"] == [{"OAuth2PasswordBearer": []}, {"ApiKey": []}]
    assert org_orders["operationId"] == "organizations-orders-list"


def test_organization_routes_document_their_errors(document: dict[str, Any]) -> None:
    member = document["paths"]["/api/v1/organizations/{org_id}/members/{user_id}"]
    assert {"401", "403", "404", "409", "422"} <= set(member["patch"]["responses"])
    accept = document["paths"]["/api/v1/invitations/accept"]["post"]
    assert {"400", "401", "403", "422"} <= set(accept["responses"])
    assert "LAST_OWNER" in member["delete"]["responses"]["409"]["description"]


def test_both_order_lists_answer_a_page_or_a_cursor_page(document: dict[str, Any]) -> None:
    for path in ("/api/v1/orders", "/api/v1/organizations/{org_id}/orders"):
        operation = document["paths"][path]["get"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "oneOf": [
                {"$ref": "#/components/schemas/OrderPage"},
                {"$ref": "#/components/schemas/OrderCursorPage"},
            ]
        }, path
        assert {"limit", "cursor", "page", "page_size", "status"} <= {
            parameter["name"] for parameter in operation["parameters"]
        }
        assert "422" in operation["responses"]


# The public catalog serves a key as an anonymous caller: never 403 there (API.md).
PUBLIC_READS = {
    ("get", "/api/v1/products"),
    ("get", "/api/v1/products/{product_id}"),
    ("get", "/api/v1/products/{product_id}/images/{image_id}"),
}


def test_every_route_of_people_declares_the_403_a_key_gets(document: dict[str, Any]) -> None:
    """A key on a route for people, or without the scope a key route needs, is 403
    INSUFFICIENT_SCOPE: every such route documents it beside its 401."""
    undeclared = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if (method, path) in PUBLIC_READS:
                continue
            if {"OAuth2PasswordBearer": []} not in operation.get("security", []):
                continue
            forbidden = operation["responses"].get("403", {}).get("description", "")
            if "INSUFFICIENT_SCOPE" not in forbidden:
                undeclared.append(f"{method.upper()} {path}")
    assert undeclared == []
