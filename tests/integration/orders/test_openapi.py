"""The OpenAPI document describes the catalog and orders routes as API.md says."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from tests.problems import PROBLEM

ROUTES: dict[tuple[str, str], set[str]] = {
    ("get", "/api/v1/products"): {"200", "304", "422", "503"},
    ("post", "/api/v1/products"): {"201", "401", "403", "409", "413", "415", "422", "503"},
    ("get", "/api/v1/products/{product_id}"): {"200", "304", "404", "422", "503"},
    ("patch", "/api/v1/products/{product_id}"): {
        "200",
        "401",
        "403",
        "404",
        "413",
        "415",
        "422",
        "503",
    },
    ("delete", "/api/v1/products/{product_id}"): {"204", "401", "403", "404", "422", "503"},
    ("post", "/api/v1/orders"): {
        "201",
        "401",
        "403",
        "404",
        "409",
        "413",
        "415",
        "422",
        "503",
    },
    ("get", "/api/v1/orders"): {"200", "401", "403", "422", "503"},
    ("get", "/api/v1/orders/{order_id}"): {"200", "401", "403", "404", "422", "503"},
    ("post", "/api/v1/orders/{order_id}/cancel"): {
        "200",
        "401",
        "403",
        "404",
        "409",
        "422",
        "503",
    },
    ("patch", "/api/v1/orders/{order_id}/status"): {
        "200",
        "401",
        "403",
        "404",
        "409",
        "413",
        "415",
        "422",
        "503",
    },
}


ACCEPT_API_KEYS = {("post", "/api/v1/orders"), ("get", "/api/v1/orders/{order_id}")}


@pytest.fixture
async def document(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_every_route_of_the_contract_is_there(document: dict[str, Any]) -> None:
    for method, path in ROUTES:
        assert method in document["paths"][path], (method, path)


@pytest.mark.parametrize(("method", "path"), list(ROUTES))
def test_each_route_documents_its_errors_as_problems(
    document: dict[str, Any], method: str, path: str
) -> None:
    responses = document["paths"][path][method]["responses"]
    assert set(responses) == ROUTES[(method, path)]
    for status, response in responses.items():
        if int(status) >= 400:
            assert list(response["content"]) == [PROBLEM]
            assert response["content"][PROBLEM]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }


def test_named_components_and_the_status_enum(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {"ProductOut", "OrderOut", "OrderLineOut", "ProductPage", "OrderPage"} <= set(schemas)
    assert "HTTPValidationError" not in schemas
    assert schemas["OrderStatus"]["enum"] == [
        "pending",
        "paid",
        "shipped",
        "delivered",
        "cancelled",
    ]
    assert schemas["OrderOut"]["properties"]["status"] == {
        "$ref": "#/components/schemas/OrderStatus"
    }
    assert schemas["OrderOut"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/OrderLineOut"
    }
    assert schemas["OrderPage"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/OrderOut"
    }
    assert schemas["ProductOut"]["properties"]["id"]["format"] == "uuid"
    assert schemas["ProductOut"]["properties"]["created_at"]["format"] == "date-time"
    assert set(schemas["ProductPage"]["required"]) == {
        "items",
        "total",
        "page",
        "page_size",
        "has_next",
    }


def test_request_models_forbid_unknown_fields(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("ProductCreate", "ProductUpdate", "OrderCreate", "OrderLineCreate"):
        assert schemas[name]["additionalProperties"] is False, name
    assert "unit_price_cents" not in schemas["OrderLineCreate"]["properties"]


def test_creation_documents_location_and_the_idempotency_headers(
    document: dict[str, Any],
) -> None:
    create_order = document["paths"]["/api/v1/orders"]["post"]
    created = create_order["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderOut"
    }
    assert {"Location", "Idempotent-Replayed"} <= set(created["headers"])
    header = next(p for p in create_order["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header"
    assert header["required"] is False
    create_product = document["paths"]["/api/v1/products"]["post"]["responses"]["201"]
    assert "Location" in create_product["headers"]


def test_token_routes_use_the_oauth2_scheme_and_public_reads_do_not_require_it(
    document: dict[str, Any],
) -> None:
    for (method, path), statuses in ROUTES.items():
        operation = document["paths"][path][method]
        assert all(p["name"] != "Authorization" for p in operation.get("parameters", []))
        if (method, path) in ACCEPT_API_KEYS:
            # People (OAuth2) or an organization's API key (HTTP bearer), either one.
            assert operation["security"] == [{"OAuth2PasswordBearer": []}, {"ApiKey": []}]
        elif "401" in statuses:
            assert operation["security"] == [{"OAuth2PasswordBearer": []}], (method, path)
    for path in ("/api/v1/products", "/api/v1/products/{product_id}"):
        security = document["paths"][path]["get"]["security"]
        assert sorted(security, key=len) == [{}, {"OAuth2PasswordBearer": []}]
    list_products = document["paths"]["/api/v1/products"]["get"]
    # A page or a cursor page (API.md, Cursor pages).
    assert list_products["responses"]["200"]["content"]["application/json"]["schema"] == {
        "oneOf": [
            {"$ref": "#/components/schemas/ProductPage"},
            {"$ref": "#/components/schemas/ProductCursorPage"},
        ]
    }
