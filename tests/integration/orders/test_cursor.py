"""`GET /orders?limit=...&cursor=...`: keyset pages newest first, cursors bound to the caller and
the filters, and a deep page that reads no more rows than the first (EXPLAIN on the read side's
own statement)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from app.features.orders.queries import _KEYSET_PAGES
from app.features.users.models import Role
from tests.integration.catalog import ORDERS, Login, ProductFactory, order_url, place_order
from tests.problems import assert_problem


async def walk(
    client: AsyncClient,
    headers: dict[str, str],
    params: dict[str, Any],
    between: Any = None,
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    response = await client.get(ORDERS, params=params, headers=headers)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        seen += body["items"]
        if between is not None:
            await between()
        if body["next_cursor"] is None:
            return seen
        response = await client.get(
            ORDERS, params={**params, "cursor": body["next_cursor"]}, headers=headers
        )


class TestOrderCursorPages:
    async def test_walk_returns_each_order_once_newest_first_while_orders_come_and_change(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product(stock=1000)
        _, alice = await login()
        _, admin = await login(role=Role.admin)
        placed = [await place_order(client, alice, product.id) for _ in range(8)]
        # Half of them at the very same instant: the id has to break the tie.
        await db_conn.execute(
            "UPDATE orders SET created_at = $1 WHERE id = ANY($2::uuid[])",
            (await db_conn.fetchval("SELECT min(created_at) FROM orders")),
            [uuid.UUID(order["id"]) for order in placed[:4]],
        )
        expected = [
            str(row["id"])
            for row in await db_conn.fetch(
                "SELECT id FROM orders ORDER BY created_at DESC, id DESC"
            )
        ]
        unseen = iter(reversed(placed))

        async def between() -> None:
            # A new order (newer than every cursor) and a status change of one not yet seen.
            await place_order(client, alice, product.id)
            order = next(unseen, None)
            if order is not None:
                response = await client.patch(
                    f"{order_url(order['id'])}/status", json={"status": "paid"}, headers=admin
                )
                assert response.status_code == 200, response.text

        seen = await walk(client, alice, {"limit": 3}, between)
        ids = [order["id"] for order in seen]
        assert len(ids) == len(set(ids))
        assert [order_id for order_id in ids if order_id in expected] == expected
        assert all(order["items"] for order in seen)

    async def test_a_user_walks_only_their_own_orders_and_filters_hold(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        product = await make_product(stock=100)
        _, alice = await login()
        _, bob = await login()
        mine = [await place_order(client, alice, product.id) for _ in range(3)]
        await place_order(client, bob, product.id)
        seen = await walk(client, alice, {"limit": 2})
        assert [order["id"] for order in seen] == [order["id"] for order in reversed(mine)]
        assert await walk(client, alice, {"limit": 2, "status": "shipped"}) == []

    async def test_an_admin_walks_every_order_or_one_users(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        product = await make_product(stock=100)
        alice, alice_headers = await login()
        _, bob = await login()
        _, admin = await login(role=Role.admin)
        for headers in (alice_headers, bob, alice_headers, bob):
            await place_order(client, headers, product.id)
        assert len(await walk(client, admin, {"limit": 3})) == 4
        only_alice = await walk(client, admin, {"limit": 1, "user_id": str(alice.id)})
        assert {order["user_id"] for order in only_alice} == {str(alice.id)}
        assert len(only_alice) == 2


class TestOrderCursorRefusals:
    async def _cursor(self, client: AsyncClient, headers: dict[str, str], **params: Any) -> str:
        body = (await client.get(ORDERS, params={"limit": 1, **params}, headers=headers)).json()
        cursor: str = body["next_cursor"]
        assert cursor
        return cursor

    async def test_another_callers_cursor_is_422(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        product = await make_product(stock=100)
        _, alice = await login()
        _, bob = await login()
        for headers in (alice, alice, bob, bob):
            await place_order(client, headers, product.id)
        cursor = await self._cursor(client, alice)
        ok = await client.get(ORDERS, params={"cursor": cursor}, headers=alice)
        assert ok.status_code == 200
        response = await client.get(ORDERS, params={"cursor": cursor}, headers=bob)
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"] == ["query", "cursor"]

    async def test_a_cursor_of_other_filters_or_edited_is_422(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        product = await make_product(stock=100)
        _, alice = await login()
        for _ in range(3):
            await place_order(client, alice, product.id)
        cursor = await self._cursor(client, alice, status="pending")
        assert (
            await client.get(ORDERS, params={"cursor": cursor, "status": "pending"}, headers=alice)
        ).status_code == 200
        for params in (
            {"cursor": cursor},
            {"cursor": cursor, "status": "paid"},
            {"cursor": cursor[:-3] + "AAA", "status": "pending"},
        ):
            response = await client.get(ORDERS, params=params, headers=alice)
            assert_problem(response, 422, "VALIDATION_ERROR")

    async def test_mixing_pages_and_cursors_is_422(self, client: AsyncClient, login: Login) -> None:
        _, alice = await login()
        response = await client.get(ORDERS, params={"page": 1, "limit": 5}, headers=alice)
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert {error["type"] for error in body["errors"]} == {"pagination_mixed"}
        offset = await client.get(ORDERS, params={"page": 1, "page_size": 5}, headers=alice)
        assert set(offset.json()) == {"items", "total", "page", "page_size", "has_next"}


class TestOrderKeysetPlan:
    @pytest.mark.parametrize("own", [False, True])
    async def test_a_deep_page_reads_no_more_rows_than_the_first(
        self, login: Login, db_conn: asyncpg.Connection, own: bool
    ) -> None:
        user, _ = await login()
        await db_conn.execute(
            "INSERT INTO orders (id, user_id, status, total_cents, currency, created_at, "
            "updated_at) SELECT gen_random_uuid(), $1, 'pending', 100, 'USD', "
            "now() - n * interval '1 second', now() FROM generate_series(1, 20000) AS n",
            user.id,
        )
        await db_conn.execute("ANALYZE orders")
        deep = await db_conn.fetchrow(
            "SELECT created_at, id FROM orders ORDER BY created_at DESC, id DESC "
            "OFFSET 19000 LIMIT 1"
        )
        plans = []
        for after in (None, (deep["created_at"], deep["id"])):
            query = _KEYSET_PAGES[(own, False, after is not None)]
            values: dict[str, Any] = {"limit": 21}
            if own:
                values["user_id"] = user.id
            if after is not None:
                values["after_created_at"], values["after_id"] = after
            plan = await db_conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {query.text}", *query.arguments(values)
            )
            plans.append(json.loads(plan)[0]["Plan"])

        def rows_read(node: dict[str, Any]) -> int:
            if node.get("Relation Name") == "order_lines" or "order_lines" in json.dumps(
                node.get("Index Name", "")
            ):
                return 0
            own_rows = int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
            return own_rows + sum(rows_read(child) for child in node.get("Plans", []))

        first, deeper = plans
        assert "ix_orders_" in json.dumps(deeper)
        assert rows_read(deeper) <= rows_read(first) + 5
        assert rows_read(deeper) < 200
