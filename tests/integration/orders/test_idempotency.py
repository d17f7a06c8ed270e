"""`Idempotency-Key` on `POST /api/v1/orders`: replay, reuse, in flight, per user."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from tests.integration.catalog import ORDERS, Login, ProductFactory, stock_of
from tests.problems import assert_problem, locs


def order_body(product_id: uuid.UUID, quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"items": [{"product_id": str(product_id), "quantity": quantity}], **extra}


async def orders_of(db_conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    value: int = await db_conn.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user_id)
    return value


class TestIdempotencyKey:
    async def test_a_repeat_replays_the_first_response_and_creates_nothing(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=10)
        keyed = {**headers, "Idempotency-Key": "order-2026-0001"}
        first = await client.post(ORDERS, json=order_body(product.id, 2, note="hi"), headers=keyed)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        # The same JSON with other spacing and key order.
        same = json.dumps(
            {"note": "hi", "items": [{"quantity": 2, "product_id": str(product.id)}]}, indent=3
        )
        second = await client.post(
            ORDERS, content=same, headers={**keyed, "Content-Type": "application/json"}
        )
        assert second.status_code == 201
        assert second.headers["idempotent-replayed"] == "true"
        assert second.headers["location"] == first.headers["location"]
        assert second.headers["content-type"] == "application/json"
        assert second.json() == first.json()
        assert second.headers["x-request-id"] != first.headers["x-request-id"]
        assert await orders_of(db_conn, user.id) == 1
        assert await stock_of(db_conn, product.id) == 8
        record = await db_conn.fetchrow(
            "SELECT * FROM idempotency_keys WHERE user_id = $1", user.id
        )
        assert record is not None
        assert record["location"] == first.headers["location"]
        assert json.loads(record["response_body"])["id"] == first.json()["id"]
        assert record["response_status"] == 201
        kept = record["expires_at"] - record["created_at"]
        assert kept.total_seconds() >= 24 * 3600

    async def test_another_body_with_the_same_key_is_422(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=10)
        keyed = {**headers, "Idempotency-Key": "k-reused"}
        assert (await client.post(ORDERS, json=order_body(product.id, 1), headers=keyed)).is_success
        response = await client.post(ORDERS, json=order_body(product.id, 3), headers=keyed)
        problem = assert_problem(response, 422, "IDEMPOTENCY_KEY_REUSED")
        assert problem["errors"] == []
        assert "idempotent-replayed" not in response.headers
        assert await orders_of(db_conn, user.id) == 1
        assert await stock_of(db_conn, product.id) == 9

    async def test_keys_are_scoped_to_the_user(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        alice, alice_headers = await login()
        bob, bob_headers = await login()
        product = await make_product(stock=10)
        body = order_body(product.id, 1)
        first = await client.post(
            ORDERS, json=body, headers={**alice_headers, "Idempotency-Key": "shared"}
        )
        second = await client.post(
            ORDERS, json=body, headers={**bob_headers, "Idempotency-Key": "shared"}
        )
        assert (first.status_code, second.status_code) == (201, 201)
        assert "idempotent-replayed" not in second.headers
        assert first.json()["id"] != second.json()["id"]
        assert second.json()["user_id"] == str(bob.id)
        assert await orders_of(db_conn, alice.id) == 1
        assert await orders_of(db_conn, bob.id) == 1
        assert await stock_of(db_conn, product.id) == 8

    async def test_a_4xx_outcome_is_kept_and_replayed(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=1)
        keyed = {**headers, "Idempotency-Key": "too-many"}
        first = await client.post(ORDERS, json=order_body(product.id, 5), headers=keyed)
        problem = assert_problem(first, 409, "INSUFFICIENT_STOCK")
        await db_conn.execute("UPDATE products SET stock = 100 WHERE id = $1", product.id)
        second = await client.post(ORDERS, json=order_body(product.id, 5), headers=keyed)
        assert second.status_code == 409
        assert second.headers["idempotent-replayed"] == "true"
        assert second.headers["content-type"] == "application/problem+json"
        assert second.json() == problem
        assert await orders_of(db_conn, user.id) == 0
        assert await stock_of(db_conn, product.id) == 100

    async def test_an_unknown_product_outcome_is_kept_with_its_loc(
        self, client: AsyncClient, login: Login, db_conn: asyncpg.Connection
    ) -> None:
        user, headers = await login()
        keyed = {**headers, "Idempotency-Key": "ghost"}
        body = order_body(uuid.uuid4())
        first = await client.post(ORDERS, json=body, headers=keyed)
        problem = assert_problem(first, 422, "VALIDATION_ERROR")
        assert locs(problem) == [["body", "items", 0, "product_id"]]
        second = await client.post(ORDERS, json=body, headers=keyed)
        assert second.headers["idempotent-replayed"] == "true"
        assert second.json() == problem
        assert (
            await db_conn.fetchval(
                "SELECT response_status FROM idempotency_keys WHERE user_id = $1", user.id
            )
            == 422
        )

    async def test_a_5xx_is_not_kept_so_a_retry_runs_again(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=10)
        keyed = {**headers, "Idempotency-Key": "flaky"}
        # A real database failure in the middle of the order's transaction.
        await db_conn.execute(
            "CREATE FUNCTION fail_order_line() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
        )
        await db_conn.execute(
            "CREATE TRIGGER fail_order_line BEFORE INSERT ON order_lines "
            "FOR EACH ROW EXECUTE FUNCTION fail_order_line()"
        )
        try:
            failed = await client.post(ORDERS, json=order_body(product.id, 2), headers=keyed)
        finally:
            await db_conn.execute("DROP TRIGGER fail_order_line ON order_lines")
            await db_conn.execute("DROP FUNCTION fail_order_line()")
        problem = assert_problem(failed, 500, "INTERNAL_ERROR")
        assert problem["detail"] == "Internal server error"
        assert await db_conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0
        assert await stock_of(db_conn, product.id) == 10
        retry = await client.post(ORDERS, json=order_body(product.id, 2), headers=keyed)
        assert retry.status_code == 201
        assert "idempotent-replayed" not in retry.headers
        assert await orders_of(db_conn, user.id) == 1
        assert await stock_of(db_conn, product.id) == 8

    async def test_a_key_still_in_flight_is_409(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=10)
        keyed = {**headers, "Idempotency-Key": "busy"}
        # Another transaction holds the key, as a first request still running would.
        key = "hashtextextended('idempotency:' || $1::text || ':' || $2, 0)"
        lock = "SELECT pg_advisory_lock(" + key + ")"
        await db_conn.execute(lock, str(user.id), "busy")
        try:
            response = await client.post(ORDERS, json=order_body(product.id), headers=keyed)
        finally:
            await db_conn.execute(
                "SELECT pg_advisory_unlock(" + key + ")",
                str(user.id),
                "busy",
            )
        assert_problem(response, 409, "IDEMPOTENCY_KEY_IN_USE")
        assert await orders_of(db_conn, user.id) == 0
        assert await stock_of(db_conn, product.id) == 10
        after = await client.post(ORDERS, json=order_body(product.id), headers=keyed)
        assert after.status_code == 201
        assert "idempotent-replayed" not in after.headers

    async def test_an_expired_key_runs_again(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=10)
        keyed = {**headers, "Idempotency-Key": "old"}
        first = await client.post(ORDERS, json=order_body(product.id), headers=keyed)
        await db_conn.execute(
            "UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"
        )
        second = await client.post(ORDERS, json=order_body(product.id), headers=keyed)
        assert second.status_code == 201
        assert "idempotent-replayed" not in second.headers
        assert second.json()["id"] != first.json()["id"]
        assert await orders_of(db_conn, user.id) == 2
        assert await db_conn.fetchval("SELECT count(*) FROM idempotency_keys") == 1

    async def test_without_a_key_every_request_orders(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=10)
        for _ in range(2):
            assert (
                await client.post(ORDERS, json=order_body(product.id), headers=headers)
            ).is_success
        assert await orders_of(db_conn, user.id) == 2
        assert await db_conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0

    @pytest.mark.parametrize("key", ["", "k" * 256, "tab\there"])
    async def test_a_malformed_key_is_422(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        key: str,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=10)
        response = await client.post(
            ORDERS, json=order_body(product.id), headers={**headers, "Idempotency-Key": key}
        )
        problem = assert_problem(response, 422, "VALIDATION_ERROR")
        assert locs(problem) == [["header", "Idempotency-Key"]]
        assert await orders_of(db_conn, user.id) == 0

    async def test_a_key_of_255_printable_characters_is_accepted(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=10)
        key = ("a-Z_0.9 ~!" * 26)[:255]
        response = await client.post(
            ORDERS, json=order_body(product.id), headers={**headers, "Idempotency-Key": key}
        )
        assert response.status_code == 201
