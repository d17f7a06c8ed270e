"""Conditional catalog reads: strong ETags, `If-None-Match` -> 304, `Cache-Control`, `Vary`.

API.md (Products): anonymous catalog reads are `public, no-cache` with a strong ETag computed on
the JSON before content coding (`-gz` suffix when gzip-coded, either form matches); a signed-in
caller and every other route get `private` or `no-store`; the ETag changes with every write that
changes the answer.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import asyncpg
from httpx import AsyncClient, Response
from redis.asyncio import Redis

from app.features.users.models import Role
from tests.integration.catalog import Login, ProductFactory, place_order, product_url
from tests.problems import assert_problem

PRODUCTS = "/api/v1/products"
IDENTITY = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}
STRONG = re.compile(r'^"[0-9a-f]{32}"$')


def etag_of(response: Response) -> str:
    etag = response.headers["etag"]
    assert STRONG.match(etag), etag
    return etag


def bare(etag: str) -> str:
    return etag.strip('"')


def assert_vary(response: Response) -> None:
    """`Vary` names Authorization and Accept-Encoding (CORS adds Origin), each once."""
    names = [name.strip().lower() for name in response.headers["vary"].split(",")]
    assert names[:2] == ["authorization", "accept-encoding"], names
    assert len(names) == len(set(names)), names


def assert_public(response: Response) -> None:
    assert response.headers["cache-control"] == "public, no-cache"
    assert_vary(response)


def assert_not_modified(response: Response, etag: str) -> None:
    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert "content-type" not in response.headers


async def get(client: AsyncClient, url: str, **headers: str) -> Response:
    return await client.get(url, headers={**IDENTITY, **headers})


class TestValidators:
    async def test_an_anonymous_product_read_carries_a_strong_etag_of_its_json(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        response = await get(client, product_url(product.id))
        assert response.status_code == 200
        assert_public(response)
        # Computed on the JSON itself: a client or a test can recompute it.
        assert (
            bare(etag_of(response)) == hashlib.blake2b(response.content, digest_size=16).hexdigest()
        )
        # Served from the cache the second time, with the same tag.
        again = await get(client, product_url(product.id))
        assert again.headers["etag"] == response.headers["etag"]
        assert again.content == response.content

    async def test_an_anonymous_list_carries_one_too(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        await make_product()
        response = await get(client, PRODUCTS)
        assert response.status_code == 200
        assert_public(response)
        etag_of(response)

    async def test_a_signed_in_caller_gets_private_answers(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product()
        _, user = await login()
        for url in (product_url(product.id), PRODUCTS):
            response = await get(client, url, **user)
            assert response.status_code == 200
            assert response.headers["cache-control"] == "private, no-cache"
            assert_vary(response)
            etag = etag_of(response)
            assert_not_modified(await get(client, url, **user, **{"If-None-Match": etag}), etag)

    async def test_an_admin_sees_an_inactive_product_privately(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product(is_active=False)
        _, admin = await login(role=Role.admin)
        response = await get(client, product_url(product.id), **admin)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "private, no-cache"
        # The admin's tag does not open the inactive product to anyone else.
        anonymous = await get(
            client, product_url(product.id), **{"If-None-Match": etag_of(response)}
        )
        assert_problem(anonymous, 404, "NOT_FOUND")
        assert anonymous.headers["cache-control"] == "no-store"

    async def test_a_max_age_setting_lets_shared_caches_serve_for_a_while(
        self, make_client: Any, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product()
        cdn: AsyncClient = await make_client(catalog_max_age_seconds=30)
        response = await get(cdn, product_url(product.id))
        assert response.headers["cache-control"] == "public, max-age=30"
        _, user = await login()
        private = await get(cdn, product_url(product.id), **user)
        assert private.headers["cache-control"] == "private, no-cache"


class TestIfNoneMatch:
    async def test_the_current_etag_gets_304_without_a_body(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        for url in (product_url(product.id), PRODUCTS):
            etag = etag_of(await get(client, url))
            response = await get(client, url, **{"If-None-Match": etag})
            assert_not_modified(response, etag)
            assert_public(response)

    async def test_the_weak_form_a_list_and_a_star_match_too(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        url = product_url(product.id)
        etag = etag_of(await get(client, url))
        other = '"' + "0" * 32 + '"'
        for header in (f"W/{etag}", f"{other}, {etag}", f'{other},W/"{bare(etag)}-gz"', "*"):
            assert_not_modified(await get(client, url, **{"If-None-Match": header}), etag)

    async def test_a_stale_or_malformed_etag_gets_the_full_answer(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        url = product_url(product.id)
        etag = etag_of(await get(client, url))
        for header in ('"' + "f" * 32 + '"', bare(etag), f'"{bare(etag)}-br"', f'"{etag}"', ""):
            response = await get(client, url, **{"If-None-Match": header})
            assert response.status_code == 200, header
            assert response.headers["etag"] == etag
            assert response.json()["id"] == str(product.id)

    async def test_an_unknown_product_is_404_whatever_the_etag(self, client: AsyncClient) -> None:
        response = await get(client, product_url(uuid.uuid4()), **{"If-None-Match": "*"})
        assert_problem(response, 404, "NOT_FOUND")
        assert "etag" not in response.headers

    async def test_redis_down_gives_the_same_etag_and_304(
        self, client: AsyncClient, make_client: Any, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        etag = etag_of(await get(client, product_url(product.id)))
        down: AsyncClient = await make_client(redis_url="redis://127.0.0.1:1/0")
        response = await get(down, product_url(product.id))
        assert response.status_code == 200
        assert response.headers["etag"] == etag
        assert_not_modified(
            await get(down, product_url(product.id), **{"If-None-Match": etag}), etag
        )


class TestAfterAWrite:
    async def test_a_price_change_changes_both_etags(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product(price_cents=500)
        _, admin = await login(role=Role.admin)
        urls = (product_url(product.id), PRODUCTS)
        before = {url: etag_of(await get(client, url)) for url in urls}
        patched = await client.patch(
            product_url(product.id), json={"price_cents": 650}, headers=admin
        )
        assert patched.status_code == 200
        assert patched.headers["cache-control"] == "no-store"
        for url in urls:
            response = await get(client, url, **{"If-None-Match": before[url]})
            assert response.status_code == 200
            assert response.headers["etag"] != before[url]
            assert "650" in response.text
            assert_not_modified(
                await get(client, url, **{"If-None-Match": response.headers["etag"]}),
                response.headers["etag"],
            )

    async def test_a_write_that_changes_nothing_keeps_the_etag(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        etag = etag_of(await get(client, product_url(product.id)))
        # An empty PATCH writes nothing and leaves the cached answer alone.
        assert (await client.patch(product_url(product.id), json={}, headers=admin)).is_success
        assert_not_modified(
            await get(client, product_url(product.id), **{"If-None-Match": etag}), etag
        )

    async def test_an_order_changes_the_etag_of_the_stock_it_took(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product(stock=5)
        _, user = await login()
        etag = etag_of(await get(client, product_url(product.id)))
        await place_order(client, user, product.id, quantity=2)
        response = await get(client, product_url(product.id), **{"If-None-Match": etag})
        assert response.status_code == 200
        assert response.json()["stock"] == 3
        assert response.headers["etag"] != etag

    async def test_deactivating_turns_the_old_etag_into_a_404(
        self, client: AsyncClient, make_product: ProductFactory, login: Login
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        etag = etag_of(await get(client, product_url(product.id)))
        assert (await client.delete(product_url(product.id), headers=admin)).status_code == 204
        response = await get(client, product_url(product.id), **{"If-None-Match": etag})
        assert_problem(response, 404, "NOT_FOUND")

    async def test_a_write_behind_the_apis_back_is_not_seen_until_the_cache_goes(
        self,
        client: AsyncClient,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
        redis_client: Redis,
    ) -> None:
        # The tag follows the cached bytes, not the table: the same answer, the same tag.
        product = await make_product(price_cents=500)
        etag = etag_of(await get(client, product_url(product.id)))
        await db_conn.execute("UPDATE products SET price_cents = 999 WHERE id = $1", product.id)
        assert_not_modified(
            await get(client, product_url(product.id), **{"If-None-Match": etag}), etag
        )
        await redis_client.flushdb()
        response = await get(client, product_url(product.id), **{"If-None-Match": etag})
        assert response.status_code == 200
        assert response.json()["price_cents"] == 999


class TestGzip:
    async def test_a_gzip_coded_list_carries_the_suffixed_etag_and_either_form_matches(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        for number in range(12):  # a page well over the 1 KiB compression threshold
            await make_product(description=f"Product number {number}, described at length.")
        plain = await get(client, PRODUCTS)
        etag = etag_of(plain)
        assert len(plain.content) > 1024
        coded = await client.get(PRODUCTS, headers=GZIP)
        assert coded.status_code == 200
        assert coded.headers["content-encoding"] == "gzip"
        assert coded.headers["etag"] == f'"{bare(etag)}-gz"'
        assert coded.content == plain.content  # httpx decoded it: the same JSON
        assert_vary(coded)
        gz = coded.headers["etag"]
        # Either form matches; the 304 names the form the 200 would have carried.
        assert_not_modified(await client.get(PRODUCTS, headers={**GZIP, "If-None-Match": etag}), gz)
        assert_not_modified(await client.get(PRODUCTS, headers={**GZIP, "If-None-Match": gz}), gz)
        assert_not_modified(await get(client, PRODUCTS, **{"If-None-Match": gz}), etag)

    async def test_a_small_answer_is_not_coded_and_keeps_the_plain_etag(
        self, client: AsyncClient, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        response = await client.get(product_url(product.id), headers=GZIP)
        assert "content-encoding" not in response.headers
        etag = etag_of(response)
        assert_vary(response)
        assert_not_modified(
            await client.get(product_url(product.id), headers={**GZIP, "If-None-Match": etag}),
            etag,
        )


class TestOtherRoutes:
    async def test_other_routes_are_not_stored(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        _, user = await login()
        _, admin = await login(role=Role.admin)
        health = await client.get("/health")
        assert health.headers["cache-control"] == "no-store"
        me = await client.get("/api/v1/users/me", headers=user)
        assert me.status_code == 200
        assert me.headers["cache-control"] == "no-store"
        assert "etag" not in me.headers
        orders = await client.get("/api/v1/orders", headers=user)
        assert orders.headers["cache-control"] == "no-store"
        created = await client.post(
            PRODUCTS,
            json={"sku": "ETAG-1", "name": "Tagged", "price_cents": 1, "stock": 1},
            headers=admin,
        )
        assert created.status_code == 201
        assert created.headers["cache-control"] == "no-store"
        assert "etag" not in created.headers
        # Errors too.
        missing = await client.get("/api/v1/users/me")
        assert missing.status_code == 401
        assert missing.headers["cache-control"] == "no-store"


async def test_the_openapi_document_declares_the_validators_and_the_304(
    client: AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    for path in (PRODUCTS, PRODUCTS + "/{product_id}"):
        responses = document["paths"][path]["get"]["responses"]
        assert {"ETag", "Cache-Control", "Vary"} <= set(responses["200"]["headers"])
        assert "content" not in responses["304"]
        assert "ETag" in responses["304"]["headers"]
