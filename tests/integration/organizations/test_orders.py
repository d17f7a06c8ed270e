"""Orders of an organization: placing, reading, listing and cancelling them as members, former
members and API keys; other organizations' orders by id are 404 (BOLA)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from httpx import AsyncClient

from app.features.organizations.models import OrgRole
from app.features.users.models import Role
from tests.integration.catalog import ORDERS, Login, ProductFactory, order_url, stock_of
from tests.integration.organizations.conftest import (
    AddMember,
    MakeKey,
    MakeTeam,
    Team,
    bearer,
)
from tests.problems import assert_problem


async def org_order(
    client: AsyncClient,
    headers: dict[str, str],
    product_id: uuid.UUID,
    org_id: str | None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"items": [{"product_id": str(product_id), "quantity": 1}]}
    if org_id is not None:
        body["organization_id"] = org_id
    response = await client.post(ORDERS, json=body, headers={**headers, **extra})
    assert response.status_code == 201, response.text
    placed: dict[str, Any] = response.json()
    return placed


def org_orders_url(team: Team) -> str:
    return team.url("/orders")


class TestPlace:
    async def test_member_places_an_order_for_the_organization(
        self, client: AsyncClient, make_team: MakeTeam, make_product: ProductFactory
    ) -> None:
        team = await make_team()
        product = await make_product(stock=5)
        order = await org_order(client, team.member_headers, product.id, team.id)
        assert (order["organization_id"], order["user_id"]) == (team.id, str(team.member.id))
        personal = await org_order(client, team.member_headers, product.id, None)
        assert personal["organization_id"] is None

    async def test_non_member_gets_404_and_no_stock_is_taken(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_product: ProductFactory,
        login: Login,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team()
        product = await make_product(stock=5)
        _, stranger = await login()
        _, platform_admin = await login(role=Role.admin)
        for headers in (stranger, platform_admin):
            response = await client.post(
                ORDERS,
                json={
                    "items": [{"product_id": str(product.id), "quantity": 1}],
                    "organization_id": team.id,
                },
                headers=headers,
            )
            assert_problem(response, 404, "NOT_FOUND")
        assert await stock_of(db_conn, product.id) == 5
        assert await db_conn.fetchval("SELECT count(*) FROM orders") == 0


class TestRead:
    async def test_every_member_reads_it_others_get_404(
        self, client: AsyncClient, make_team: MakeTeam, make_product: ProductFactory, login: Login
    ) -> None:
        team = await make_team()
        other = await make_team("Other")
        product = await make_product()
        order = await org_order(client, team.member_headers, product.id, team.id)
        for headers in (team.owner_headers, team.admin_headers, team.member_headers):
            response = await client.get(order_url(order["id"]), headers=headers)
            assert response.status_code == 200, response.text
            assert response.json() == order
        _, stranger = await login()
        for headers in (stranger, other.owner_headers):
            assert_problem(
                await client.get(order_url(order["id"]), headers=headers), 404, "NOT_FOUND"
            )

    async def test_the_organizations_list_and_my_list(
        self, client: AsyncClient, make_team: MakeTeam, make_product: ProductFactory, login: Login
    ) -> None:
        team = await make_team()
        product = await make_product()
        first = await org_order(client, team.member_headers, product.id, team.id)
        second = await org_order(client, team.admin_headers, product.id, team.id)
        personal = await org_order(client, team.member_headers, product.id, None)
        response = await client.get(org_orders_url(team), headers=team.member_headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [item["id"] for item in body["items"]] == [second["id"], first["id"]]
        assert body["total"] == 2
        mine = (await client.get(ORDERS, headers=team.member_headers)).json()["items"]
        assert [item["id"] for item in mine] == [personal["id"], first["id"]]
        cancelled = await client.get(
            org_orders_url(team), params={"status": "cancelled"}, headers=team.owner_headers
        )
        assert cancelled.json()["items"] == []
        _, stranger = await login()
        assert_problem(await client.get(org_orders_url(team), headers=stranger), 404, "NOT_FOUND")


class TestCancel:
    async def test_placing_member_owner_and_admin_may_cancel_others_may_not(
        self, client: AsyncClient, make_team: MakeTeam, make_product: ProductFactory, login: Login
    ) -> None:
        team = await make_team()
        product = await make_product()
        _, other_member = await login()
        by_owner = await org_order(client, team.owner_headers, product.id, team.id)
        # A plain member who did not place it sees it but may not cancel it.
        response = await client.post(
            order_url(by_owner["id"]) + "/cancel", headers=team.member_headers
        )
        assert_problem(response, 403, "FORBIDDEN")
        for headers in (team.member_headers, team.admin_headers, team.owner_headers):
            placed = await org_order(client, team.member_headers, product.id, team.id)
            response = await client.post(order_url(placed["id"]) + "/cancel", headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "cancelled"
        _ = other_member

    async def test_managers_cancel_from_pending_only_like_an_owner(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team()
        product = await make_product()
        placed = await org_order(client, team.member_headers, product.id, team.id)
        await db_conn.execute(
            "UPDATE orders SET status = 'paid' WHERE id = $1", uuid.UUID(placed["id"])
        )
        response = await client.post(
            order_url(placed["id"]) + "/cancel", headers=team.owner_headers
        )
        assert_problem(response, 409, "INVALID_STATE_TRANSITION")


class TestFormerMembers:
    async def test_former_member_keeps_their_own_orders_only(
        self, client: AsyncClient, make_team: MakeTeam, make_product: ProductFactory
    ) -> None:
        team = await make_team()
        product = await make_product()
        own = await org_order(client, team.member_headers, product.id, team.id)
        others = await org_order(client, team.admin_headers, product.id, team.id)
        removed = await client.delete(
            team.url(f"/members/{team.member.id}"), headers=team.owner_headers
        )
        assert removed.status_code == 204
        assert (
            await client.get(order_url(own["id"]), headers=team.member_headers)
        ).status_code == 200
        assert_problem(
            await client.get(order_url(others["id"]), headers=team.member_headers), 404, "NOT_FOUND"
        )
        assert_problem(
            await client.get(org_orders_url(team), headers=team.member_headers), 404, "NOT_FOUND"
        )
        cancel = await client.post(order_url(own["id"]) + "/cancel", headers=team.member_headers)
        assert cancel.status_code == 200, cancel.text

    async def test_deleted_organization_keeps_its_orders(
        self, client: AsyncClient, make_team: MakeTeam, make_product: ProductFactory
    ) -> None:
        team = await make_team()
        product = await make_product()
        own = await org_order(client, team.member_headers, product.id, team.id)
        assert (await client.delete(team.url(), headers=team.owner_headers)).status_code == 204
        response = await client.get(order_url(own["id"]), headers=team.member_headers)
        assert (response.status_code, response.json()["organization_id"]) == (200, team.id)
        assert_problem(
            await client.get(org_orders_url(team), headers=team.member_headers), 404, "NOT_FOUND"
        )


class TestApiKeys:
    async def test_write_key_places_orders_for_its_organization(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team()
        other = await make_team("Other")
        product = await make_product(stock=10)
        key = await make_key(team, ["orders:write"])
        implicit = await org_order(client, bearer(key), product.id, None)
        explicit = await org_order(client, bearer(key), product.id, team.id)
        for order in (implicit, explicit):
            assert (order["organization_id"], order["user_id"]) == (team.id, str(team.owner.id))
        response = await client.post(
            ORDERS,
            json={
                "items": [{"product_id": str(product.id), "quantity": 1}],
                "organization_id": other.id,
            },
            headers=bearer(key),
        )
        assert_problem(response, 404, "NOT_FOUND")
        assert await stock_of(db_conn, product.id) == 8
        # Reading needs orders:read.
        assert_problem(
            await client.get(order_url(implicit["id"]), headers=bearer(key)),
            403,
            "INSUFFICIENT_SCOPE",
        )

    async def test_read_key_reads_its_organizations_orders_only(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        make_product: ProductFactory,
    ) -> None:
        team = await make_team()
        other = await make_team("Other")
        product = await make_product()
        key = await make_key(team, ["orders:read"])
        org = await org_order(client, team.member_headers, product.id, team.id)
        personal = await org_order(client, team.owner_headers, product.id, None)
        foreign = await org_order(client, other.member_headers, product.id, other.id)
        response = await client.get(order_url(org["id"]), headers=bearer(key))
        assert (response.status_code, response.json()) == (200, org)
        for order in (personal, foreign):
            assert_problem(
                await client.get(order_url(order["id"]), headers=bearer(key)), 404, "NOT_FOUND"
            )
        listed = await client.get(org_orders_url(team), headers=bearer(key))
        assert [item["id"] for item in listed.json()["items"]] == [org["id"]]
        assert_problem(
            await client.get(org_orders_url(other), headers=bearer(key)), 404, "NOT_FOUND"
        )
        # Placing, listing GET /orders and cancelling are not for this key.
        for method, url in (
            ("POST", ORDERS),
            ("GET", ORDERS),
            ("POST", order_url(org["id"]) + "/cancel"),
        ):
            body = (
                {"items": [{"product_id": str(product.id), "quantity": 1}]}
                if method == "POST" and url == ORDERS
                else None
            )
            response = await client.request(method, url, json=body, headers=bearer(key))
            assert_problem(response, 403, "INSUFFICIENT_SCOPE")

    async def test_idempotency_key_is_scoped_to_the_api_key(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team()
        product = await make_product(stock=10)
        key = await make_key(team, ["orders:write"])
        first = await org_order(client, bearer(key), product.id, None, **{"Idempotency-Key": "k1"})
        replay = await client.post(
            ORDERS,
            json={"items": [{"product_id": str(product.id), "quantity": 1}]},
            headers={**bearer(key), "Idempotency-Key": "k1"},
        )
        assert replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == first["id"]
        # The key's creator using the same Idempotency-Key is another scope: a new order.
        own = await org_order(
            client, team.owner_headers, product.id, None, **{"Idempotency-Key": "k1"}
        )
        assert own["id"] != first["id"]
        assert await db_conn.fetchval("SELECT count(*) FROM orders") == 2


class TestCursorPages:
    """`GET /organizations/{id}/orders?limit=`: keyset pages of the organization's orders."""

    async def _walk(
        self, client: AsyncClient, url: str, headers: dict[str, str], **params: Any
    ) -> list[str]:
        ids: list[str] = []
        query: dict[str, Any] = {"limit": 2, **params}
        while True:
            response = await client.get(url, params=query, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) == {"items", "next_cursor"}
            ids += [order["id"] for order in body["items"]]
            if body["next_cursor"] is None:
                return ids
            query = {"limit": 2, **params, "cursor": body["next_cursor"]}

    async def test_members_and_keys_walk_the_organizations_orders_only(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        make_product: ProductFactory,
    ) -> None:
        team, other = await make_team(), await make_team("Globex")
        product = await make_product(stock=50)
        placed = [
            await org_order(client, team.member_headers, product.id, team.id) for _ in range(5)
        ]
        await org_order(client, team.member_headers, product.id, None)  # personal
        await org_order(client, other.member_headers, product.id, other.id)
        newest_first = [order["id"] for order in reversed(placed)]
        url = org_orders_url(team)
        for headers in (team.owner_headers, team.member_headers, bearer(await make_key(team))):
            assert await self._walk(client, url, headers) == newest_first
        # A status filter holds on every page.
        cancelled = await client.post(
            order_url(placed[1]["id"]) + "/cancel", headers=team.member_headers
        )
        assert cancelled.status_code == 200
        walked = await self._walk(client, url, team.admin_headers, status="pending")
        assert walked == [i for i in newest_first if i != placed[1]["id"]]

    async def test_a_cursor_of_another_caller_organization_or_list_is_422(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        make_product: ProductFactory,
        add_member: AddMember,
    ) -> None:
        team, other = await make_team(), await make_team("Globex")
        await add_member(other.id, team.member, OrgRole.member)
        product = await make_product(stock=50)
        for _ in range(3):
            await org_order(client, team.member_headers, product.id, team.id)
            await org_order(client, team.member_headers, product.id, None)
        first = await client.get(
            org_orders_url(team), params={"limit": 1}, headers=team.member_headers
        )
        cursor = first.json()["next_cursor"]
        assert cursor
        refusals = [
            # Another member of the same organization.
            (org_orders_url(team), team.owner_headers, {}),
            # An API key of the organization.
            (org_orders_url(team), bearer(await make_key(team)), {}),
            # The same caller, another organization it belongs to.
            (org_orders_url(other), team.member_headers, {}),
            # The same caller, their own list.
            (ORDERS, team.member_headers, {}),
            # The same caller and list, another filter.
            (org_orders_url(team), team.member_headers, {"status": "pending"}),
        ]
        for url, headers, extra in refusals:
            response = await client.get(url, params={"cursor": cursor, **extra}, headers=headers)
            assert_problem(response, 422, "VALIDATION_ERROR")
        mixed = await client.get(
            org_orders_url(team),
            params={"limit": 2, "page": 1},
            headers=team.member_headers,
        )
        assert_problem(mixed, 422, "VALIDATION_ERROR")
        # A stranger is 404 before any cursor is read.
        stranger = await client.get(
            org_orders_url(other), params={"cursor": cursor}, headers=team.owner_headers
        )
        assert_problem(stranger, 404, "NOT_FOUND")
