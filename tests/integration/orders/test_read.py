"""Reading orders: the owner's or an admin's, someone else's is 404, lists newest first, no N+1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event

from app.features.orders.queries import _PAGES
from app.features.users.models import Role, User
from tests.integration.catalog import ORDERS, Login, ProductFactory, order_url, place_order
from tests.problems import assert_problem, locs


@asynccontextmanager
async def count_statements(app: FastAPI) -> AsyncIterator[list[str]]:
    """Every SQL statement the app sends while the block runs: those SQLAlchemy executes, and
    those the hot reads send with asyncpg directly (seen by asyncpg's query logger)."""
    statements: list[str] = []
    engine = app.state.engine.sync_engine

    def record(*args: Any) -> None:
        statements.append(args[2])

    def log_query(query: Any) -> None:
        statements.append(query.query)

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log_query)

    def on_checkin(dbapi_connection: Any, *_: Any) -> None:
        if dbapi_connection is not None:
            dbapi_connection.driver_connection.remove_query_logger(log_query)

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine.pool, "checkout", on_checkout)
    event.listen(engine.pool, "checkin", on_checkin)
    try:
        yield statements
        await asyncio.sleep(0)  # asyncpg calls its query loggers soon after, not at once
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine.pool, "checkout", on_checkout)
        event.remove(engine.pool, "checkin", on_checkin)


class TestGetOrder:
    async def test_the_owner_reads_their_order(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, headers = await login()
        product = await make_product()
        created = await place_order(client, headers, product.id, 2)
        response = await client.get(order_url(created["id"]), headers=headers)
        assert response.status_code == 200
        assert response.json() == created

    async def test_someone_elses_order_is_404_like_an_unknown_one(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, owner = await login()
        _, other = await login()
        created = await place_order(client, owner, (await make_product()).id)
        theirs = assert_problem(
            await client.get(order_url(created["id"]), headers=other), 404, "NOT_FOUND"
        )
        missing_id = uuid.uuid4()
        missing = assert_problem(
            await client.get(order_url(missing_id), headers=other), 404, "NOT_FOUND"
        )
        assert theirs["detail"] == f"Order {created['id']} not found"
        assert missing["detail"] == f"Order {missing_id} not found"

    async def test_an_admin_reads_any_order(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, owner = await login()
        _, admin = await login(role=Role.admin)
        created = await place_order(client, owner, (await make_product()).id)
        response = await client.get(order_url(created["id"]), headers=admin)
        assert response.status_code == 200
        assert response.json()["id"] == created["id"]

    async def test_a_malformed_id_is_422_and_no_token_401(
        self, client: AsyncClient, login: Login
    ) -> None:
        _, headers = await login()
        problem = assert_problem(
            await client.get(order_url("42"), headers=headers), 422, "VALIDATION_ERROR"
        )
        assert locs(problem) == [["path", "order_id"]]
        assert_problem(await client.get(order_url(uuid.uuid4())), 401, "UNAUTHORIZED")

    async def test_one_order_is_read_in_one_query(
        self, app: FastAPI, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, headers = await login()
        product = await make_product()
        other = await make_product()
        created = await client.post(
            ORDERS,
            json={
                "items": [
                    {"product_id": str(product.id), "quantity": 1},
                    {"product_id": str(other.id), "quantity": 1},
                ]
            },
            headers=headers,
        )
        async with count_statements(app) as statements:
            response = await client.get(order_url(created.json()["id"]), headers=headers)
        assert response.status_code == 200
        order_reads = [s for s in statements if "FROM orders" in s]
        assert len(order_reads) == 1
        assert "order_lines" in order_reads[0]


class TestListOrders:
    async def test_a_user_sees_only_their_orders_newest_first(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, me = await login()
        _, other = await login()
        product = await make_product(stock=100)
        mine = [await place_order(client, me, product.id) for _ in range(3)]
        await place_order(client, other, product.id)
        response = await client.get(ORDERS, headers=me)
        assert response.status_code == 200
        body = response.json()
        assert [order["id"] for order in body["items"]] == [o["id"] for o in reversed(mine)]
        assert (body["total"], body["page"], body["page_size"], body["has_next"]) == (
            3,
            1,
            20,
            False,
        )
        assert body["items"][0]["items"][0]["product_id"] == str(product.id)

    async def test_pages_and_ties_on_created_at_break_on_id(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=100)
        ids = [(await place_order(client, headers, product.id))["id"] for _ in range(5)]
        await db_conn.execute(
            "UPDATE orders SET created_at = '2026-01-01T00:00:00Z' WHERE user_id = $1", user.id
        )
        expected = sorted(ids, reverse=True)
        first = (await client.get(ORDERS, params={"page_size": 2}, headers=headers)).json()
        second = (
            await client.get(ORDERS, params={"page": 2, "page_size": 2}, headers=headers)
        ).json()
        third = (
            await client.get(ORDERS, params={"page": 3, "page_size": 2}, headers=headers)
        ).json()
        seen = [o["id"] for page in (first, second, third) for o in page["items"]]
        assert seen == expected
        assert (first["has_next"], second["has_next"], third["has_next"]) == (True, True, False)
        assert third["total"] == 5
        beyond = (
            await client.get(ORDERS, params={"page": 9, "page_size": 2}, headers=headers)
        ).json()
        assert (beyond["items"], beyond["total"], beyond["has_next"]) == ([], 5, False)

    async def test_status_filters_the_list(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=100)
        paid = await place_order(client, headers, product.id)
        await place_order(client, headers, product.id)
        await db_conn.execute(
            "UPDATE orders SET status = 'paid' WHERE id = $1", uuid.UUID(paid["id"])
        )
        body = (await client.get(ORDERS, params={"status": "paid"}, headers=headers)).json()
        assert [o["id"] for o in body["items"]] == [paid["id"]]
        assert body["items"][0]["status"] == "paid"
        problem = assert_problem(
            await client.get(ORDERS, params={"status": "lost"}, headers=headers),
            422,
            "VALIDATION_ERROR",
        )
        assert locs(problem) == [["query", "status"]]

    async def test_an_admin_sees_all_orders_or_one_users(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        alice, alice_headers = await login()
        _, bob_headers = await login()
        _, admin = await login(role=Role.admin)
        product = await make_product(stock=100)
        alices = await place_order(client, alice_headers, product.id)
        bobs = await place_order(client, bob_headers, product.id)
        everyone = (await client.get(ORDERS, headers=admin)).json()
        assert [o["id"] for o in everyone["items"]] == [bobs["id"], alices["id"]]
        only_alice = (
            await client.get(ORDERS, params={"user_id": str(alice.id)}, headers=admin)
        ).json()
        assert [o["id"] for o in only_alice["items"]] == [alices["id"]]
        assert only_alice["total"] == 1

    async def test_user_id_from_a_non_admin_is_403_even_their_own(
        self, client: AsyncClient, login: Login
    ) -> None:
        user, headers = await login()
        for target in (user.id, uuid.uuid4()):
            response = await client.get(ORDERS, params={"user_id": str(target)}, headers=headers)
            assert_problem(response, 403, "FORBIDDEN")

    async def test_page_bounds_are_422_and_no_token_401(
        self, client: AsyncClient, login: Login
    ) -> None:
        _, headers = await login()
        response = await client.get(ORDERS, params={"page_size": 101}, headers=headers)
        assert locs(assert_problem(response, 422, "VALIDATION_ERROR")) == [["query", "page_size"]]
        assert_problem(await client.get(ORDERS), 401, "UNAUTHORIZED")

    async def test_a_page_loads_its_lines_in_one_query(
        self, app: FastAPI, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, headers = await login()
        first, second = await make_product(stock=100), await make_product(stock=100)
        for products in ([first], [first, second], [second, first]):
            items = [{"product_id": str(product.id), "quantity": 1} for product in products]
            assert (await client.post(ORDERS, json={"items": items}, headers=headers)).is_success
        async with count_statements(app) as statements:
            response = await client.get(ORDERS, headers=headers)
        body = response.json()
        assert body["total"] == 3
        assert [[line["product_id"] for line in order["items"]] for order in body["items"]] == [
            [str(second.id), str(first.id)],
            [str(first.id), str(second.id)],
            [str(first.id)],
        ]
        # One round trip for the page and its lines; the count is skipped (the page is not full).
        order_reads = [s for s in statements if "orders" in s and "users" not in s]
        assert len(order_reads) == 1
        assert "JOIN order_lines" in order_reads[0]


class TestListIndexes:
    """The read side's own statements can use their indexes (seq scans off, so tiny tables do
    not mislead)."""

    @pytest.mark.parametrize(
        ("own", "status", "index"),
        [
            (True, False, "ix_orders_user_id_created_at_id"),
            (False, True, "ix_orders_status_created_at_id"),
            (False, False, "ix_orders_created_at_id"),
        ],
    )
    async def test_order_pages_read_along_an_index(
        self, db_conn: asyncpg.Connection, make_user: Any, own: bool, status: bool, index: str
    ) -> None:
        user: User = await make_user()
        page_query, _ = _PAGES[(own, status)]
        values = {"offset": 0, "limit": 20, "user_id": user.id, "status": "paid"}
        async with db_conn.transaction():
            await db_conn.execute("SET LOCAL enable_seqscan = off")
            explained = await db_conn.fetch(
                "EXPLAIN " + page_query.text, *page_query.arguments(values)
            )
        plan = [row[0] for row in explained]
        limit = next(i for i, line in enumerate(plan) if "->  Limit" in line)
        # The page is cut straight from the index, newest first: no sort under the LIMIT
        # (only the page's few joined lines are put in position, above it).
        assert "Index Scan Backward using " + index in plan[limit + 1], plan
        assert any("Index Scan using pk_order_lines" in line for line in plan), plan
