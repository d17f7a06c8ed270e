"""`/api/v1/products`: admin writes, public reads, and a cache that is never stale after a write."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient
from redis.asyncio import Redis

from app.features.users.models import Role
from tests.integration.catalog import Login, ProductFactory, product_url
from tests.problems import assert_problem, locs

PRODUCTS = "/api/v1/products"


def new_product(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sku": "MUG-001",
        "name": "Coffee mug",
        "description": "Holds coffee.",
        "price_cents": 1250,
        "stock": 7,
    }
    body.update(overrides)
    return body


async def product_row(db_conn: asyncpg.Connection, product_id: Any) -> asyncpg.Record | None:
    return await db_conn.fetchrow(
        "SELECT * FROM products WHERE id = $1", uuid.UUID(str(product_id))
    )


class TestCreateProduct:
    async def test_admin_creates_a_product_with_location_and_currency(
        self, client: AsyncClient, login: Login, db_conn: asyncpg.Connection
    ) -> None:
        _, admin = await login(role=Role.admin)
        response = await client.post(
            PRODUCTS, json=new_product(name="  Coffee mug  "), headers=admin
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert response.headers["location"] == product_url(body["id"])
        assert response.headers["content-type"] == "application/json"
        assert body["sku"] == "MUG-001"
        assert body["name"] == "Coffee mug"
        assert body["description"] == "Holds coffee."
        assert body["price_cents"] == 1250
        assert body["currency"] == "USD"
        assert body["stock"] == 7
        assert body["is_active"] is True
        assert body["created_at"].endswith(("Z", "+00:00"))
        row = await product_row(db_conn, body["id"])
        assert row is not None
        assert (row["sku"], row["name"], row["stock"], row["price_cents"]) == (
            "MUG-001",
            "Coffee mug",
            7,
            1250,
        )
        assert uuid.UUID(body["id"]).version == 7

    async def test_description_is_optional_and_null_when_absent(
        self, client: AsyncClient, login: Login
    ) -> None:
        _, admin = await login(role=Role.admin)
        body = new_product()
        del body["description"]
        response = await client.post(PRODUCTS, json=body, headers=admin)
        assert response.status_code == 201
        assert response.json()["description"] is None

    async def test_a_taken_sku_is_409_and_nothing_is_added(
        self, client: AsyncClient, login: Login, db_conn: asyncpg.Connection
    ) -> None:
        _, admin = await login(role=Role.admin)
        assert (await client.post(PRODUCTS, json=new_product(), headers=admin)).status_code == 201
        response = await client.post(PRODUCTS, json=new_product(name="Other"), headers=admin)
        body = assert_problem(response, 409, "SKU_TAKEN")
        assert body["sku"] == "MUG-001"
        assert await db_conn.fetchval("SELECT count(*) FROM products") == 1

    @pytest.mark.parametrize(
        ("override", "loc"),
        [
            ({"sku": "mug-001"}, ["body", "sku"]),
            ({"sku": "-MUG"}, ["body", "sku"]),
            ({"sku": "AB"}, ["body", "sku"]),
            ({"sku": "A" * 33}, ["body", "sku"]),
            ({"name": "   "}, ["body", "name"]),
            ({"name": "n" * 201}, ["body", "name"]),
            ({"description": "d" * 2001}, ["body", "description"]),
            ({"price_cents": -1}, ["body", "price_cents"]),
            ({"price_cents": 1.5}, ["body", "price_cents"]),
            ({"stock": -1}, ["body", "stock"]),
            ({"is_active": False}, ["body", "is_active"]),
            ({"currency": "EUR"}, ["body", "currency"]),
        ],
    )
    async def test_invalid_or_unknown_fields_are_422_with_their_loc(
        self,
        client: AsyncClient,
        login: Login,
        db_conn: asyncpg.Connection,
        override: dict[str, Any],
        loc: list[str],
    ) -> None:
        _, admin = await login(role=Role.admin)
        response = await client.post(PRODUCTS, json=new_product(**override), headers=admin)
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert loc in locs(body)
        assert all("input" not in error for error in body["errors"])
        assert await db_conn.fetchval("SELECT count(*) FROM products") == 0

    async def test_a_user_who_is_not_admin_gets_403(
        self, client: AsyncClient, login: Login, db_conn: asyncpg.Connection
    ) -> None:
        _, user = await login()
        response = await client.post(PRODUCTS, json=new_product(), headers=user)
        assert_problem(response, 403, "FORBIDDEN")
        assert await db_conn.fetchval("SELECT count(*) FROM products") == 0

    async def test_without_a_token_it_is_401(self, client: AsyncClient) -> None:
        response = await client.post(PRODUCTS, json=new_product())
        assert_problem(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"


class TestGetProduct:
    async def test_anyone_reads_an_active_product(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        product = await make_product(sku="TEA-01", name="Tea", price_cents=300, stock=4)
        response = await client.get(product_url(product.id))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-content-type-options"] == "nosniff"
        body = response.json()
        assert body["id"] == str(product.id)
        assert (body["sku"], body["name"], body["price_cents"], body["stock"]) == (
            "TEA-01",
            "Tea",
            300,
            4,
        )
        assert body["currency"] == "USD"

    async def test_an_unknown_product_is_404(self, client: AsyncClient) -> None:
        missing = uuid.uuid4()
        body = assert_problem(await client.get(product_url(missing)), 404, "NOT_FOUND")
        assert str(missing) in body["detail"]

    async def test_a_malformed_id_is_422(self, client: AsyncClient) -> None:
        body = assert_problem(await client.get(product_url("nope")), 422, "VALIDATION_ERROR")
        assert locs(body) == [["path", "product_id"]]

    async def test_an_inactive_product_is_404_except_for_admins(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product(is_active=False)
        _, user = await login()
        _, admin = await login(role=Role.admin)
        assert_problem(await client.get(product_url(product.id)), 404, "NOT_FOUND")
        assert_problem(await client.get(product_url(product.id), headers=user), 404, "NOT_FOUND")
        response = await client.get(product_url(product.id), headers=admin)
        assert response.status_code == 200
        assert response.json()["is_active"] is False
        # The admin's read cached the product; it must not leak to the public.
        assert_problem(await client.get(product_url(product.id)), 404, "NOT_FOUND")

    async def test_an_invalid_token_reads_as_anonymous(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        response = await client.get(
            product_url(product.id), headers={"Authorization": "Bearer not-a-token"}
        )
        assert response.status_code == 200

    async def test_reads_are_served_from_the_cache(
        self,
        client: AsyncClient,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        redis_client: Redis,
    ) -> None:
        product = await make_product(price_cents=500)
        assert (await client.get(product_url(product.id))).json()["price_cents"] == 500
        # Behind the API's back: the cache still answers with what it stored.
        await db_conn.execute("UPDATE products SET price_cents = 999 WHERE id = $1", product.id)
        assert (await client.get(product_url(product.id))).json()["price_cents"] == 500
        assert await redis_client.exists(f"cache:products:{product.id}:v") == 1

    async def test_a_price_change_through_the_api_is_visible_at_once(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product(price_cents=500)
        _, admin = await login(role=Role.admin)
        assert (await client.get(product_url(product.id))).json()["price_cents"] == 500
        assert (await client.get(PRODUCTS)).json()["items"][0]["price_cents"] == 500
        patched = await client.patch(
            product_url(product.id), json={"price_cents": 650}, headers=admin
        )
        assert patched.status_code == 200
        assert (await client.get(product_url(product.id))).json()["price_cents"] == 650
        assert (await client.get(PRODUCTS)).json()["items"][0]["price_cents"] == 650

    async def test_reads_answer_from_the_database_when_redis_is_down(
        self, make_client: Any, make_product: ProductFactory, db_conn: asyncpg.Connection
    ) -> None:
        product = await make_product(price_cents=500)
        # A closed loopback port: connections are refused at once.
        down: AsyncClient = await make_client(redis_url="redis://127.0.0.1:1/0")
        first = await down.get(product_url(product.id))
        assert first.status_code == 200
        assert first.json()["price_cents"] == 500
        await db_conn.execute("UPDATE products SET price_cents = 777 WHERE id = $1", product.id)
        second = await down.get(product_url(product.id))
        assert second.status_code == 200
        assert second.json()["price_cents"] == 777
        listed = await down.get(PRODUCTS)
        assert listed.status_code == 200
        assert listed.json()["total"] == 1


class TestListProducts:
    async def test_active_products_by_name_then_id_with_pagination(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        await make_product(name="Banana")
        first_twin = await make_product(name="Apple")
        second_twin = await make_product(name="Apple")
        await make_product(name="Cherry")
        await make_product(name="Aardvark", is_active=False)
        response = await client.get(PRODUCTS, params={"page": 1, "page_size": 3})
        assert response.status_code == 200
        body = response.json()
        assert [item["name"] for item in body["items"]] == ["Apple", "Apple", "Banana"]
        assert [item["id"] for item in body["items"][:2]] == sorted(
            [str(first_twin.id), str(second_twin.id)]
        )
        assert (body["total"], body["page"], body["page_size"], body["has_next"]) == (
            4,
            1,
            3,
            True,
        )
        last = (await client.get(PRODUCTS, params={"page": 2, "page_size": 3})).json()
        assert [item["name"] for item in last["items"]] == ["Cherry"]
        assert last["has_next"] is False
        beyond = (await client.get(PRODUCTS, params={"page": 5, "page_size": 3})).json()
        assert beyond["items"] == []
        assert beyond["total"] == 4
        assert beyond["has_next"] is False

    async def test_q_matches_name_or_sku_case_insensitively(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        await make_product(name="Blue Mug", sku="MUG-BLUE")
        await make_product(name="Teapot", sku="POT-1")
        await make_product(name="Red cup", sku="CUP-RED")
        await make_product(name="100% cotton", sku="TEE-1")
        names = lambda body: sorted(item["name"] for item in body["items"])  # noqa: E731
        assert names((await client.get(PRODUCTS, params={"q": "mug"})).json()) == ["Blue Mug"]
        assert names((await client.get(PRODUCTS, params={"q": "pot-"})).json()) == ["Teapot"]
        assert names((await client.get(PRODUCTS, params={"q": " RED "})).json()) == ["Red cup"]
        # LIKE wildcards in q are literal characters.
        assert names((await client.get(PRODUCTS, params={"q": "%"})).json()) == ["100% cotton"]
        assert (await client.get(PRODUCTS, params={"q": "_"})).json()["total"] == 0

    async def test_include_inactive_is_for_admins_and_ignored_for_others(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        await make_product(name="Active")
        await make_product(name="Retired", is_active=False)
        _, user = await login()
        _, admin = await login(role=Role.admin)
        query = {"include_inactive": "true"}
        as_admin = (await client.get(PRODUCTS, params=query, headers=admin)).json()
        assert [item["name"] for item in as_admin["items"]] == ["Active", "Retired"]
        for headers in ({}, user):
            body = (await client.get(PRODUCTS, params=query, headers=headers)).json()
            assert [item["name"] for item in body["items"]] == ["Active"]

    @pytest.mark.parametrize(
        ("params", "loc"),
        [
            ({"page": 0}, ["query", "page"]),
            ({"page_size": 0}, ["query", "page_size"]),
            ({"page_size": 101}, ["query", "page_size"]),
            ({"page": "x"}, ["query", "page"]),
        ],
    )
    async def test_page_bounds_are_422(
        self, client: AsyncClient, params: dict[str, Any], loc: list[str]
    ) -> None:
        body = assert_problem(await client.get(PRODUCTS, params=params), 422, "VALIDATION_ERROR")
        assert locs(body) == [loc]

    async def test_a_new_product_appears_in_the_cached_list_at_once(
        self, client: AsyncClient, login: Login
    ) -> None:
        _, admin = await login(role=Role.admin)
        assert (await client.get(PRODUCTS)).json()["total"] == 0
        assert (await client.post(PRODUCTS, json=new_product(), headers=admin)).status_code == 201
        assert (await client.get(PRODUCTS)).json()["total"] == 1


class TestUpdateProduct:
    async def test_only_the_fields_sent_change(
        self,
        client: AsyncClient,
        make_product: ProductFactory,
        login: Login,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product(name="Mug", description="Old", price_cents=500, stock=3)
        _, admin = await login(role=Role.admin)
        response = await client.patch(
            product_url(product.id),
            json={"name": " Big mug ", "stock": 9, "description": None},
            headers=admin,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["name"], body["stock"], body["price_cents"], body["description"]) == (
            "Big mug",
            9,
            500,
            None,
        )
        assert body["updated_at"] > body["created_at"]
        row = await product_row(db_conn, product.id)
        assert row is not None
        assert (row["name"], row["stock"], row["price_cents"], row["description"]) == (
            "Big mug",
            9,
            500,
            None,
        )

    async def test_reactivating_brings_a_product_back(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product(is_active=False)
        _, admin = await login(role=Role.admin)
        assert_problem(await client.get(product_url(product.id)), 404, "NOT_FOUND")
        patched = await client.patch(
            product_url(product.id), json={"is_active": True}, headers=admin
        )
        assert patched.json()["is_active"] is True
        assert (await client.get(product_url(product.id))).status_code == 200

    @pytest.mark.parametrize(
        ("patch", "loc"),
        [
            ({"name": None}, ["body", "name"]),
            ({"price_cents": None}, ["body", "price_cents"]),
            ({"stock": -5}, ["body", "stock"]),
            ({"sku": "NEW-SKU"}, ["body", "sku"]),
            ({"currency": "EUR"}, ["body", "currency"]),
        ],
    )
    async def test_nulls_of_required_fields_and_unknown_fields_are_422(
        self,
        client: AsyncClient,
        make_product: ProductFactory,
        login: Login,
        db_conn: asyncpg.Connection,
        patch: dict[str, Any],
        loc: list[str],
    ) -> None:
        product = await make_product(name="Mug", price_cents=500, stock=3)
        _, admin = await login(role=Role.admin)
        response = await client.patch(product_url(product.id), json=patch, headers=admin)
        assert loc in locs(assert_problem(response, 422, "VALIDATION_ERROR"))
        row = await product_row(db_conn, product.id)
        assert row is not None
        assert (row["name"], row["price_cents"], row["stock"]) == ("Mug", 500, 3)

    async def test_an_unknown_product_is_404(self, client: AsyncClient, login: Login) -> None:
        _, admin = await login(role=Role.admin)
        response = await client.patch(product_url(uuid.uuid4()), json={"stock": 1}, headers=admin)
        assert_problem(response, 404, "NOT_FOUND")

    async def test_a_user_who_is_not_admin_gets_403_and_nothing_changes(
        self,
        client: AsyncClient,
        make_product: ProductFactory,
        login: Login,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product(price_cents=500)
        _, user = await login()
        response = await client.patch(
            product_url(product.id), json={"price_cents": 1}, headers=user
        )
        assert_problem(response, 403, "FORBIDDEN")
        row = await product_row(db_conn, product.id)
        assert row is not None
        assert row["price_cents"] == 500

    async def test_a_non_json_body_is_415(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        response = await client.patch(
            product_url(product.id),
            content=b"stock=1",
            headers={**admin, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


class TestDeleteProduct:
    async def test_delete_deactivates_and_hides_the_product_at_once(
        self,
        client: AsyncClient,
        make_product: ProductFactory,
        login: Login,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        assert (await client.get(product_url(product.id))).status_code == 200
        assert (await client.get(PRODUCTS)).json()["total"] == 1
        response = await client.delete(product_url(product.id), headers=admin)
        assert response.status_code == 204
        assert response.content == b""
        row = await product_row(db_conn, product.id)
        assert row is not None
        assert row["is_active"] is False
        assert_problem(await client.get(product_url(product.id)), 404, "NOT_FOUND")
        assert (await client.get(PRODUCTS)).json()["total"] == 0
        again = await client.delete(product_url(product.id), headers=admin)
        assert again.status_code == 204

    async def test_an_unknown_product_is_404(self, client: AsyncClient, login: Login) -> None:
        _, admin = await login(role=Role.admin)
        assert_problem(
            await client.delete(product_url(uuid.uuid4()), headers=admin), 404, "NOT_FOUND"
        )

    async def test_a_user_who_is_not_admin_gets_403(
        self,
        client: AsyncClient,
        make_product: ProductFactory,
        login: Login,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product()
        _, user = await login()
        assert_problem(await client.delete(product_url(product.id), headers=user), 403, "FORBIDDEN")
        row = await product_row(db_conn, product.id)
        assert row is not None
        assert row["is_active"] is True
