"""`POST /api/v1/orders`: prices from the catalog, stock taken atomically, all lines or none."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from tests.integration.catalog import (
    ORDERS,
    Login,
    ProductFactory,
    order_url,
    product_url,
    stock_of,
)
from tests.problems import assert_problem, locs


async def order_count(db_conn: asyncpg.Connection) -> int:
    value: int = await db_conn.fetchval("SELECT count(*) FROM orders")
    return value


class TestCreateOrder:
    async def test_lines_are_priced_from_the_catalog_and_stock_is_taken(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        mug = await make_product(sku="MUG-1", name="Mug", price_cents=1250, stock=5)
        tea = await make_product(sku="TEA-1", name="Tea", price_cents=300, stock=10)
        response = await client.post(
            ORDERS,
            json={
                "items": [
                    {"product_id": str(tea.id), "quantity": 3},
                    {"product_id": str(mug.id), "quantity": 2},
                ],
                "note": "  leave at the door  ",
            },
            headers=headers,
        )
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        assert "idempotent-replayed" not in response.headers
        body = response.json()
        assert response.headers["location"] == order_url(body["id"])
        assert body["user_id"] == str(user.id)
        assert body["status"] == "pending"
        assert body["currency"] == "USD"
        assert body["note"] == "leave at the door"
        # Lines keep the submitted order.
        assert body["items"] == [
            {
                "product_id": str(tea.id),
                "sku": "TEA-1",
                "name": "Tea",
                "unit_price_cents": 300,
                "quantity": 3,
                "line_total_cents": 900,
            },
            {
                "product_id": str(mug.id),
                "sku": "MUG-1",
                "name": "Mug",
                "unit_price_cents": 1250,
                "quantity": 2,
                "line_total_cents": 2500,
            },
        ]
        assert body["total_cents"] == 3400
        assert await stock_of(db_conn, mug.id) == 3
        assert await stock_of(db_conn, tea.id) == 7
        order_id = uuid.UUID(body["id"])
        row = await db_conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        assert row is not None
        assert (row["status"], row["total_cents"], row["user_id"]) == ("pending", 3400, user.id)
        history = await db_conn.fetch(
            "SELECT * FROM order_status_history WHERE order_id = $1", order_id
        )
        assert [(h["from_status"], h["to_status"], h["changed_by"]) for h in history] == [
            (None, "pending", user.id)
        ]

    async def test_an_absent_note_is_null(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, headers = await login()
        product = await make_product()
        response = await client.post(
            ORDERS,
            json={"items": [{"product_id": str(product.id), "quantity": 1}]},
            headers=headers,
        )
        assert response.status_code == 201
        assert response.json()["note"] is None

    async def test_the_snapshot_survives_catalog_changes(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, headers = await login()
        product = await make_product(name="Mug", price_cents=1000)
        created = await client.post(
            ORDERS,
            json={"items": [{"product_id": str(product.id), "quantity": 1}]},
            headers=headers,
        )
        await db_conn.execute(
            "UPDATE products SET name = 'Renamed', price_cents = 5 WHERE id = $1", product.id
        )
        line = (await client.get(order_url(created.json()["id"]), headers=headers)).json()["items"][
            0
        ]
        assert (line["name"], line["unit_price_cents"]) == ("Mug", 1000)

    async def test_the_product_read_shows_the_new_stock_at_once(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=5)
        assert (await client.get(product_url(product.id))).json()["stock"] == 5
        assert (await client.get("/api/v1/products")).json()["items"][0]["stock"] == 5
        response = await client.post(
            ORDERS,
            json={"items": [{"product_id": str(product.id), "quantity": 2}]},
            headers=headers,
        )
        assert response.status_code == 201
        assert (await client.get(product_url(product.id))).json()["stock"] == 3
        assert (await client.get("/api/v1/products")).json()["items"][0]["stock"] == 3

    @pytest.mark.parametrize(
        ("line_extra", "order_extra", "loc"),
        [
            ({"unit_price_cents": 1}, {}, ["body", "items", 0, "unit_price_cents"]),
            ({"line_total_cents": 1}, {}, ["body", "items", 0, "line_total_cents"]),
            ({"price_cents": 1}, {}, ["body", "items", 0, "price_cents"]),
            ({}, {"total_cents": 1}, ["body", "total_cents"]),
            ({}, {"currency": "EUR"}, ["body", "currency"]),
            ({}, {"status": "paid"}, ["body", "status"]),
            ({}, {"user_id": str(uuid.uuid4())}, ["body", "user_id"]),
        ],
    )
    async def test_client_sent_prices_totals_and_other_fields_are_unknown_fields(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        line_extra: dict[str, Any],
        order_extra: dict[str, Any],
        loc: list[str | int],
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=5)
        body = {
            "items": [{"product_id": str(product.id), "quantity": 1, **line_extra}],
            **order_extra,
        }
        problem = assert_problem(
            await client.post(ORDERS, json=body, headers=headers), 422, "VALIDATION_ERROR"
        )
        assert problem["errors"] == [
            {"loc": loc, "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        ]
        assert await order_count(db_conn) == 0
        assert await stock_of(db_conn, product.id) == 5

    async def test_unknown_and_inactive_products_are_422_with_the_lines_loc(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, headers = await login()
        good = await make_product(stock=5)
        retired = await make_product(stock=5, is_active=False)
        response = await client.post(
            ORDERS,
            json={
                "items": [
                    {"product_id": str(good.id), "quantity": 1},
                    {"product_id": str(uuid.uuid4()), "quantity": 1},
                    {"product_id": str(retired.id), "quantity": 1},
                ]
            },
            headers=headers,
        )
        problem = assert_problem(response, 422, "VALIDATION_ERROR")
        assert locs(problem) == [
            ["body", "items", 1, "product_id"],
            ["body", "items", 2, "product_id"],
        ]
        assert {error["type"] for error in problem["errors"]} == {"product_unavailable"}
        assert await order_count(db_conn) == 0
        assert await stock_of(db_conn, good.id) == 5
        assert await stock_of(db_conn, retired.id) == 5

    async def test_duplicate_lines_are_422(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=5)
        line = {"product_id": str(product.id), "quantity": 1}
        problem = assert_problem(
            await client.post(ORDERS, json={"items": [line, line]}, headers=headers),
            422,
            "VALIDATION_ERROR",
        )
        assert locs(problem) == [["body", "items"]]
        assert "line 1 repeats the product of line 0" in problem["errors"][0]["msg"]
        assert await order_count(db_conn) == 0

    @pytest.mark.parametrize(
        ("quantity", "valid"), [(0, False), (1, True), (1000, True), (1001, False), (-1, False)]
    )
    async def test_quantity_is_between_1_and_1000(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        quantity: int,
        valid: bool,
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=1000)
        response = await client.post(
            ORDERS,
            json={"items": [{"product_id": str(product.id), "quantity": quantity}]},
            headers=headers,
        )
        if valid:
            assert response.status_code == 201
            assert await stock_of(db_conn, product.id) == 1000 - quantity
        else:
            problem = assert_problem(response, 422, "VALIDATION_ERROR")
            assert locs(problem) == [["body", "items", 0, "quantity"]]
            assert await stock_of(db_conn, product.id) == 1000

    @pytest.mark.parametrize(("count", "valid"), [(0, False), (50, True), (51, False)])
    async def test_an_order_has_1_to_50_lines(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        count: int,
        valid: bool,
    ) -> None:
        _, headers = await login()
        products = [await make_product(price_cents=100, stock=1) for _ in range(count)]
        items = [{"product_id": str(product.id), "quantity": 1} for product in products]
        response = await client.post(ORDERS, json={"items": items}, headers=headers)
        if valid:
            assert response.status_code == 201
            body = response.json()
            assert [line["product_id"] for line in body["items"]] == [
                i["product_id"] for i in items
            ]
            assert body["total_cents"] == 100 * count
            assert await db_conn.fetchval("SELECT sum(stock) FROM products") == 0
        else:
            problem = assert_problem(response, 422, "VALIDATION_ERROR")
            assert locs(problem) == [["body", "items"]]
            assert await order_count(db_conn) == 0

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({}, ["body", "items"]),
            ({"items": [{"quantity": 1}]}, ["body", "items", 0, "product_id"]),
            (
                {"items": [{"product_id": "nope", "quantity": 1}]},
                ["body", "items", 0, "product_id"],
            ),
            ({"items": "all"}, ["body", "items"]),
        ],
    )
    async def test_malformed_bodies_are_422(
        self, client: AsyncClient, login: Login, body: dict[str, Any], loc: list[str | int]
    ) -> None:
        _, headers = await login()
        problem = assert_problem(
            await client.post(ORDERS, json=body, headers=headers), 422, "VALIDATION_ERROR"
        )
        assert loc in locs(problem)

    async def test_a_note_over_500_characters_is_422(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, headers = await login()
        product = await make_product()
        response = await client.post(
            ORDERS,
            json={"items": [{"product_id": str(product.id), "quantity": 1}], "note": "n" * 501},
            headers=headers,
        )
        assert locs(assert_problem(response, 422, "VALIDATION_ERROR")) == [["body", "note"]]

    async def test_insufficient_stock_is_409_and_leaves_every_line_untouched(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, headers = await login()
        plenty = await make_product(stock=100)
        scarce = await make_product(stock=2)
        response = await client.post(
            ORDERS,
            json={
                "items": [
                    {"product_id": str(plenty.id), "quantity": 5},
                    {"product_id": str(scarce.id), "quantity": 3},
                ]
            },
            headers=headers,
        )
        problem = assert_problem(response, 409, "INSUFFICIENT_STOCK")
        assert problem["product_id"] == str(scarce.id)
        assert problem["requested"] == 3
        assert problem["available"] == 2
        assert problem["errors"] == []
        assert await stock_of(db_conn, plenty.id) == 100
        assert await stock_of(db_conn, scarce.id) == 2
        assert await order_count(db_conn) == 0

    async def test_without_a_token_it_is_401(
        self, client: AsyncClient, make_product: ProductFactory, db_conn: asyncpg.Connection
    ) -> None:
        product = await make_product(stock=5)
        response = await client.post(
            ORDERS, json={"items": [{"product_id": str(product.id), "quantity": 1}]}
        )
        assert_problem(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"
        assert await stock_of(db_conn, product.id) == 5

    async def test_unverified_users_may_order_by_default(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, headers = await login(is_verified=False)
        product = await make_product()
        response = await client.post(
            ORDERS,
            json={"items": [{"product_id": str(product.id), "quantity": 1}]},
            headers=headers,
        )
        assert response.status_code == 201

    async def test_unverified_users_get_403_when_verification_is_required(
        self,
        make_client: Any,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        strict: AsyncClient = await make_client(require_verified_email=True)
        _, unverified = await login(is_verified=False)
        _, verified = await login(is_verified=True)
        product = await make_product(stock=5)
        body = {"items": [{"product_id": str(product.id), "quantity": 1}]}
        for headers in (unverified, {**unverified, "Idempotency-Key": "k-1"}):
            response = await strict.post(ORDERS, json=body, headers=headers)
            assert_problem(response, 403, "EMAIL_NOT_VERIFIED")
        assert await stock_of(db_conn, product.id) == 5
        assert (await strict.post(ORDERS, json=body, headers=verified)).status_code == 201
        assert await stock_of(db_conn, product.id) == 4
