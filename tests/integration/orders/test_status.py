"""The status machine: cancel (owner vs admin) and admin status changes, stock given back once."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from app.features.orders.models import OrderStatus
from app.features.orders.service import TRANSITIONS
from app.features.users.models import Role
from tests.integration.catalog import Login, ProductFactory, order_url, place_order, stock_of
from tests.problems import assert_problem, locs

ALLOWED = [
    ("pending", "paid"),
    ("paid", "shipped"),
    ("shipped", "delivered"),
    ("pending", "cancelled"),
    ("paid", "cancelled"),
]
STATUSES = [status.value for status in OrderStatus]
FORBIDDEN = [pair for pair in itertools.product(STATUSES, STATUSES) if pair not in ALLOWED]


def cancel_url(order_id: str) -> str:
    return f"{order_url(order_id)}/cancel"


def status_url(order_id: str) -> str:
    return f"{order_url(order_id)}/status"


async def force_status(db_conn: asyncpg.Connection, order_id: str, status: str) -> None:
    await db_conn.execute(
        "UPDATE orders SET status = $2 WHERE id = $1", uuid.UUID(order_id), status
    )


async def status_of(db_conn: asyncpg.Connection, order_id: str) -> str:
    value: str = await db_conn.fetchval(
        "SELECT status FROM orders WHERE id = $1", uuid.UUID(order_id)
    )
    return value


async def history(db_conn: asyncpg.Connection, order_id: str) -> list[tuple[Any, ...]]:
    rows = await db_conn.fetch(
        "SELECT from_status, to_status, changed_by FROM order_status_history "
        "WHERE order_id = $1 ORDER BY changed_at, id",
        uuid.UUID(order_id),
    )
    return [tuple(row) for row in rows]


def test_the_machine_is_the_one_of_the_contract() -> None:
    assert sorted((a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets) == (
        sorted(ALLOWED)
    )


class TestCancelOrder:
    async def test_the_owner_cancels_a_pending_order_and_the_stock_comes_back(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user, headers = await login()
        product = await make_product(stock=10)
        order_id = (await place_order(client, headers, product.id, 4))["id"]
        assert await stock_of(db_conn, product.id) == 6
        response = await client.post(cancel_url(order_id), headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "cancelled"
        assert body["id"] == order_id
        assert body["updated_at"] > body["created_at"]
        assert await stock_of(db_conn, product.id) == 10
        assert await history(db_conn, order_id) == [
            (None, "pending", user.id),
            ("pending", "cancelled", user.id),
        ]
        # The product read is not stale after the cancellation.
        assert (await client.get(f"/api/v1/products/{product.id}")).json()["stock"] == 10

    async def test_the_stock_comes_back_only_once(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=10)
        order_id = (await place_order(client, headers, product.id, 4))["id"]
        assert (await client.post(cancel_url(order_id), headers=headers)).status_code == 200
        again = await client.post(cancel_url(order_id), headers=headers)
        problem = assert_problem(again, 409, "INVALID_STATE_TRANSITION")
        assert (problem["from"], problem["to"]) == ("cancelled", "cancelled")
        assert await stock_of(db_conn, product.id) == 10

    async def test_two_cancels_at_once_give_the_stock_back_once(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, headers = await login()
        _, admin = await login(role=Role.admin)
        product = await make_product(stock=10)
        order_id = (await place_order(client, headers, product.id, 4))["id"]
        responses = await asyncio.gather(
            client.post(cancel_url(order_id), headers=headers),
            client.post(cancel_url(order_id), headers=admin),
        )
        assert sorted(r.status_code for r in responses) == [200, 409]
        assert await stock_of(db_conn, product.id) == 10
        assert len(await history(db_conn, order_id)) == 2

    async def test_the_owner_cannot_cancel_a_paid_order_but_an_admin_can(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, owner = await login()
        admin_user, admin = await login(role=Role.admin)
        product = await make_product(stock=10)
        order_id = (await place_order(client, owner, product.id, 3))["id"]
        assert (
            await client.patch(status_url(order_id), json={"status": "paid"}, headers=admin)
        ).status_code == 200
        refused = await client.post(cancel_url(order_id), headers=owner)
        problem = assert_problem(refused, 409, "INVALID_STATE_TRANSITION")
        assert (problem["from"], problem["to"]) == ("paid", "cancelled")
        assert await status_of(db_conn, order_id) == "paid"
        assert await stock_of(db_conn, product.id) == 7
        accepted = await client.post(cancel_url(order_id), headers=admin)
        assert accepted.status_code == 200
        assert accepted.json()["status"] == "cancelled"
        assert await stock_of(db_conn, product.id) == 10
        assert (await history(db_conn, order_id))[-1] == ("paid", "cancelled", admin_user.id)

    @pytest.mark.parametrize("status", ["shipped", "delivered"])
    async def test_nobody_cancels_a_shipped_or_delivered_order(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        status: str,
    ) -> None:
        _, owner = await login()
        _, admin = await login(role=Role.admin)
        product = await make_product(stock=10)
        order_id = (await place_order(client, owner, product.id, 3))["id"]
        await force_status(db_conn, order_id, status)
        for headers in (owner, admin):
            response = await client.post(cancel_url(order_id), headers=headers)
            problem = assert_problem(response, 409, "INVALID_STATE_TRANSITION")
            assert problem["from"] == status
        assert await status_of(db_conn, order_id) == status
        assert await stock_of(db_conn, product.id) == 7

    async def test_someone_elses_order_is_404_and_nothing_changes(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, owner = await login()
        _, other = await login()
        product = await make_product(stock=10)
        order_id = (await place_order(client, owner, product.id, 3))["id"]
        assert_problem(await client.post(cancel_url(order_id), headers=other), 404, "NOT_FOUND")
        assert await status_of(db_conn, order_id) == "pending"
        assert await stock_of(db_conn, product.id) == 7
        assert len(await history(db_conn, order_id)) == 1

    async def test_unknown_order_404_and_no_token_401(
        self, client: AsyncClient, login: Login
    ) -> None:
        _, headers = await login()
        missing = str(uuid.uuid4())
        assert_problem(await client.post(cancel_url(missing), headers=headers), 404, "NOT_FOUND")
        assert_problem(await client.post(cancel_url(missing)), 401, "UNAUTHORIZED")

    async def test_a_deactivated_product_still_gets_its_stock_back(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=10)
        order_id = (await place_order(client, headers, product.id, 4))["id"]
        await db_conn.execute("UPDATE products SET is_active = false WHERE id = $1", product.id)
        assert (await client.post(cancel_url(order_id), headers=headers)).status_code == 200
        assert await stock_of(db_conn, product.id) == 10


class TestChangeStatus:
    @pytest.mark.parametrize(("current", "target"), ALLOWED)
    async def test_allowed_transitions_are_recorded_with_who_and_when(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        current: str,
        target: str,
    ) -> None:
        _, owner = await login()
        admin_user, admin = await login(role=Role.admin)
        product = await make_product(stock=10)
        order_id = (await place_order(client, owner, product.id, 3))["id"]
        await force_status(db_conn, order_id, current)
        response = await client.patch(status_url(order_id), json={"status": target}, headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == target
        assert await status_of(db_conn, order_id) == target
        last = await db_conn.fetchrow(
            "SELECT from_status, to_status, changed_by, changed_at FROM order_status_history "
            "WHERE order_id = $1 ORDER BY changed_at DESC, id DESC LIMIT 1",
            uuid.UUID(order_id),
        )
        assert last is not None
        assert (last["from_status"], last["to_status"], last["changed_by"]) == (
            current,
            target,
            admin_user.id,
        )
        assert last["changed_at"].utcoffset() is not None
        expected_stock = 10 if target == "cancelled" else 7
        assert await stock_of(db_conn, product.id) == expected_stock

    @pytest.mark.parametrize(("current", "target"), FORBIDDEN)
    async def test_every_other_transition_is_409_and_changes_nothing(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        current: str,
        target: str,
    ) -> None:
        _, owner = await login()
        _, admin = await login(role=Role.admin)
        product = await make_product(stock=10)
        order_id = (await place_order(client, owner, product.id, 3))["id"]
        await force_status(db_conn, order_id, current)
        response = await client.patch(status_url(order_id), json={"status": target}, headers=admin)
        problem = assert_problem(response, 409, "INVALID_STATE_TRANSITION")
        assert (problem["from"], problem["to"]) == (current, target)
        assert await status_of(db_conn, order_id) == current
        assert await stock_of(db_conn, product.id) == 7
        assert len(await history(db_conn, order_id)) == 1

    async def test_the_full_life_cycle(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, owner = await login()
        _, admin = await login(role=Role.admin)
        product = await make_product(stock=10)
        order_id = (await place_order(client, owner, product.id, 3))["id"]
        for target in ("paid", "shipped", "delivered"):
            response = await client.patch(
                status_url(order_id), json={"status": target}, headers=admin
            )
            assert response.json()["status"] == target
        assert [row[1] for row in await history(db_conn, order_id)] == [
            "pending",
            "paid",
            "shipped",
            "delivered",
        ]
        assert (await client.get(order_url(order_id), headers=owner)).json()["status"] == (
            "delivered"
        )

    async def test_a_user_who_is_not_admin_gets_403(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        _, owner = await login()
        product = await make_product(stock=10)
        order_id = (await place_order(client, owner, product.id, 2))["id"]
        response = await client.patch(status_url(order_id), json={"status": "paid"}, headers=owner)
        assert_problem(response, 403, "FORBIDDEN")
        assert await status_of(db_conn, order_id) == "pending"

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"status": "lost"}, ["body", "status"]),
            ({}, ["body", "status"]),
            ({"status": "paid", "note": "x"}, ["body", "note"]),
        ],
    )
    async def test_invalid_bodies_are_422(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        body: dict[str, Any],
        loc: list[str],
    ) -> None:
        _, owner = await login()
        _, admin = await login(role=Role.admin)
        order_id = (await place_order(client, owner, (await make_product()).id, 2))["id"]
        response = await client.patch(status_url(order_id), json=body, headers=admin)
        assert locs(assert_problem(response, 422, "VALIDATION_ERROR")) == [loc]

    async def test_an_unknown_order_is_404(self, client: AsyncClient, login: Login) -> None:
        _, admin = await login(role=Role.admin)
        response = await client.patch(
            status_url(str(uuid.uuid4())), json={"status": "paid"}, headers=admin
        )
        assert_problem(response, 404, "NOT_FOUND")
