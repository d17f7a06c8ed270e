"""`GET /products?limit=...&cursor=...`: keyset pages, tamper-evident cursors, the offset form
unchanged, and a deep page as cheap as the first (EXPLAIN on the repository's own statement)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from app.core.reads import read_query
from app.features.products.queries import keyset_statement
from app.features.users.models import Role
from tests.integration.catalog import Login, ProductFactory
from tests.problems import assert_problem

PRODUCTS = "/api/v1/products"


async def walk(
    client: AsyncClient, params: dict[str, Any], headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    response = await client.get(PRODUCTS, params=params, headers=headers)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        response = await client.get(
            PRODUCTS,
            params={**params, "cursor": body["next_cursor"]},
            headers=headers,
        )


class TestCursorPages:
    async def test_limit_answers_a_cursor_page_and_the_walk_returns_every_product_once(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        names = [f"Item {index:02d}" for index in range(23)]
        for name in reversed(names):
            await make_product(name=name)
        await make_product(name="Item 99 (inactive)", is_active=False)
        first = await client.get(PRODUCTS, params={"limit": 10})
        body = first.json()
        assert [item["name"] for item in body["items"]] == names[:10]
        assert isinstance(body["next_cursor"], str)
        assert "total" not in body
        walked = await walk(client, {"limit": 10})
        assert [item["name"] for item in walked] == names

    async def test_cursor_alone_uses_limit_20_and_limit_may_change(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        for index in range(45):
            await make_product(name=f"P{index:03d}")
        first = (await client.get(PRODUCTS, params={"limit": 3})).json()
        second = (await client.get(PRODUCTS, params={"cursor": first["next_cursor"]})).json()
        assert len(second["items"]) == 20
        assert second["items"][0]["name"] == "P003"
        third = (
            await client.get(PRODUCTS, params={"cursor": second["next_cursor"], "limit": 100})
        ).json()
        assert [item["name"] for item in third["items"]] == [f"P{i:03d}" for i in range(23, 45)]
        assert third["next_cursor"] is None

    async def test_walk_while_rows_are_added_and_changed_returns_each_row_once(
        self,
        client: AsyncClient,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        # Equal names: the id tie-break has to hold the order.
        originals = [await make_product(name=f"Same {index % 4}") for index in range(30)]
        seen: list[str] = []
        response = await client.get(PRODUCTS, params={"limit": 4})
        step = 0
        while True:
            body = response.json()
            seen += [item["id"] for item in body["items"]]
            # Between calls: new rows (before and after the cursor) and changes that keep the
            # sort key (stock, price) of rows already seen and not yet seen.
            await make_product(name="Same 0")
            await make_product(name=f"Same 9 {step}")
            await make_product(name="AAA first")
            await db_conn.execute(
                "UPDATE products SET stock = stock + 1, price_cents = price_cents + 5, "
                "updated_at = now()"
            )
            step += 1
            if body["next_cursor"] is None:
                break
            response = await client.get(
                PRODUCTS, params={"cursor": body["next_cursor"], "limit": 4}
            )
        assert len(seen) == len(set(seen))
        assert {str(product.id) for product in originals} <= set(seen)

    async def test_offset_form_is_unchanged(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        for index in range(3):
            await make_product(name=f"N{index}")
        body = (await client.get(PRODUCTS, params={"page": 1, "page_size": 2})).json()
        assert set(body) == {"items", "total", "page", "page_size", "has_next"}
        assert (body["total"], body["page"], body["page_size"], body["has_next"]) == (3, 1, 2, True)
        default = (await client.get(PRODUCTS)).json()
        assert (default["page"], default["page_size"]) == (1, 20)

    @pytest.mark.parametrize(
        "params",
        [
            {"page": 1, "limit": 5},
            {"page_size": 5, "limit": 5},
            {"page": 2, "cursor": "abc.def"},
        ],
    )
    async def test_mixing_the_forms_is_422(
        self, client: AsyncClient, params: dict[str, Any]
    ) -> None:
        body = assert_problem(await client.get(PRODUCTS, params=params), 422, "VALIDATION_ERROR")
        assert {error["type"] for error in body["errors"]} == {"pagination_mixed"}

    @pytest.mark.parametrize("limit", [0, 101])
    async def test_limit_outside_1_to_100_is_422(self, client: AsyncClient, limit: int) -> None:
        body = assert_problem(
            await client.get(PRODUCTS, params={"limit": limit}), 422, "VALIDATION_ERROR"
        )
        assert body["errors"][0]["loc"] == ["query", "limit"]


class TestCursorTampering:
    async def _cursor(
        self, client: AsyncClient, params: dict[str, Any], headers: dict[str, str] | None = None
    ) -> str:
        body = (await client.get(PRODUCTS, params=params, headers=headers)).json()
        cursor: str = body["next_cursor"]
        assert cursor
        return cursor

    async def _products(self, make_product: ProductFactory) -> None:
        for index in range(5):
            await make_product(name=f"Mug {index}")

    async def test_tampered_cursor_is_422(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        await self._products(make_product)
        cursor = await self._cursor(client, {"limit": 2})
        body_part, mac = cursor.split(".")
        import base64
        import json

        key = json.loads(base64.urlsafe_b64decode(body_part + "=" * (-len(body_part) % 4)))
        key[0] = "Mug 0"  # rewind the walk
        forged = base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")
        for bad in (
            f"{forged}.{mac}",
            cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB"),
            "not-a-cursor",
            cursor + "x",
        ):
            response = await client.get(PRODUCTS, params={"cursor": bad})
            problem = assert_problem(response, 422, "VALIDATION_ERROR")
            assert problem["errors"][0]["loc"] == ["query", "cursor"]

    async def test_cursor_of_other_filters_is_422(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        await self._products(make_product)
        cursor = await self._cursor(client, {"limit": 2, "q": "mug"})
        assert (
            await client.get(PRODUCTS, params={"cursor": cursor, "q": "mug"})
        ).status_code == 200
        response = await client.get(PRODUCTS, params={"cursor": cursor, "q": "cup"})
        assert_problem(response, 422, "VALIDATION_ERROR")
        response = await client.get(PRODUCTS, params={"cursor": cursor})
        assert_problem(response, 422, "VALIDATION_ERROR")

    async def test_cursor_of_another_caller_is_422(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        await self._products(make_product)
        _, alice = await login()
        _, bob = await login()
        cursor = await self._cursor(client, {"limit": 2}, alice)
        ok = await client.get(PRODUCTS, params={"cursor": cursor}, headers=alice)
        assert ok.status_code == 200
        assert_problem(
            await client.get(PRODUCTS, params={"cursor": cursor}, headers=bob),
            422,
            "VALIDATION_ERROR",
        )
        assert_problem(
            await client.get(PRODUCTS, params={"cursor": cursor}), 422, "VALIDATION_ERROR"
        )

    async def test_cursor_signed_with_another_secret_is_422(
        self, make_client: Any, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        await self._products(make_product)
        other = await make_client(jwt_secret="another-secret-" + "z" * 40)
        cursor = await self._cursor(other, {"limit": 2})
        assert_problem(
            await client.get(PRODUCTS, params={"cursor": cursor}), 422, "VALIDATION_ERROR"
        )

    async def test_admins_inactive_walk_is_bound_to_its_filter(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        await self._products(make_product)
        await make_product(name="Mug 2b", is_active=False)
        _, admin = await login(role=Role.admin)
        walked = await walk(client, {"limit": 2, "include_inactive": "true"}, admin)
        assert "Mug 2b" in [item["name"] for item in walked]
        assert len(walked) == 6


class TestKeysetPlan:
    async def test_a_deep_page_reads_no_more_rows_than_the_first(
        self, db_conn: asyncpg.Connection
    ) -> None:
        await db_conn.execute(
            "INSERT INTO products (id, sku, name, price_cents, stock, is_active) "
            "SELECT gen_random_uuid(), 'BULK-' || n, 'Bulk ' || lpad(n::text, 6, '0'), 100, 1, "
            "true FROM generate_series(1, 20000) AS n"
        )
        await db_conn.execute("ANALYZE products")
        deep = await db_conn.fetchrow(
            "SELECT name, id FROM products ORDER BY name, id OFFSET 19000 LIMIT 1"
        )
        plans = []
        for after in (None, (deep["name"], deep["id"])):
            # The statement the app runs (compiled once, at import, for asyncpg).
            query = read_query(
                keyset_statement(include_inactive=False, q=False, after=after is not None)
            )
            values: dict[str, Any] = {"limit": 21}
            if after is not None:
                values["after_name"], values["after_id"] = after
            plan = await db_conn.fetchval(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query.text}",
                *query.arguments(values),
            )
            plans.append(plan)
        import json

        first, deeper = (json.loads(plan)[0]["Plan"] for plan in plans)
        text = json.dumps(plans)
        assert "ix_products_name_id" in text
        assert "Sort" not in {first["Node Type"], deeper["Node Type"]}

        def rows_read(node: dict[str, Any]) -> int:
            own = int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
            return own + sum(rows_read(child) for child in node.get("Plans", []))

        assert rows_read(deeper) <= rows_read(first) + 5
        assert rows_read(deeper) < 100
        _ = uuid  # ids come back as UUIDs


class TestDocument:
    async def test_the_list_answers_one_of_the_page_and_the_cursor_page(
        self, client: AsyncClient
    ) -> None:
        document = (await client.get("/openapi.json")).json()
        operation = document["paths"]["/api/v1/products"]["get"]
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {
            "oneOf": [
                {"$ref": "#/components/schemas/ProductPage"},
                {"$ref": "#/components/schemas/ProductCursorPage"},
            ]
        }
        cursor_page = document["components"]["schemas"]["ProductCursorPage"]
        assert set(cursor_page["required"]) == {"items", "next_cursor"}
        names = {parameter["name"] for parameter in operation["parameters"]}
        assert {"page", "page_size", "limit", "cursor"} <= names
        assert "422" in operation["responses"]
