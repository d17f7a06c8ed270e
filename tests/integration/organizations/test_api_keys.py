"""API keys: format, shown once, stored hashed, listed without the key, deleted at once, refused
on every route of people (403 INSUFFICIENT_SCOPE) and 401 when not live; own rate limit;
`last_used_at` at most once a minute."""

from __future__ import annotations

import base64
import hashlib
import uuid

import asyncpg
from httpx import AsyncClient
from redis.asyncio import Redis

from tests.integration.organizations.conftest import MakeKey, MakeTeam, bearer
from tests.problems import assert_problem

ME = "/api/v1/users/me"


class TestCreate:
    async def test_key_format_shown_once_stored_hashed(
        self, client: AsyncClient, make_team: MakeTeam, db_conn: asyncpg.Connection
    ) -> None:
        team = await make_team()
        response = await client.post(
            team.url("/api-keys"),
            json={"name": " ci ", "scopes": ["orders:write", "orders:read"], "expires_in_days": 30},
            headers=team.admin_headers,
        )
        assert response.status_code == 201, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        key = body["key"]
        assert set(body) == {
            "id",
            "organization_id",
            "name",
            "prefix",
            "scopes",
            "created_by",
            "created_at",
            "last_used_at",
            "expires_at",
            "key",
        }
        assert key.startswith("sk_")
        raw = base64.urlsafe_b64decode(key[3:] + "=" * (-len(key[3:]) % 4))
        assert len(raw) >= 32
        assert body["prefix"] == key[:11]
        assert (body["name"], body["scopes"]) == ("ci", ["orders:read", "orders:write"])
        assert (body["created_by"], body["organization_id"]) == (str(team.admin.id), team.id)
        assert body["last_used_at"] is None
        assert body["expires_at"] is not None
        row = await db_conn.fetchrow("SELECT key_hash, prefix FROM api_keys")
        assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
        listed = await client.get(team.url("/api-keys"), headers=team.owner_headers)
        assert listed.status_code == 200
        [item] = listed.json()["items"]
        assert "key" not in item
        assert key not in listed.text
        assert item["expires_at"] == body["expires_at"]

    async def test_invalid_bodies_are_422(self, client: AsyncClient, make_team: MakeTeam) -> None:
        team = await make_team()
        for body in (
            {"name": "x", "scopes": []},
            {"name": "x", "scopes": ["orders:delete"]},
            {"name": "x", "scopes": ["orders:read", "orders:read"]},
            {"name": "", "scopes": ["orders:read"]},
            {"name": "x", "scopes": ["orders:read"], "expires_in_days": 0},
            {"name": "x", "scopes": ["orders:read"], "expires_in_days": 3651},
        ):
            response = await client.post(
                team.url("/api-keys"), json=body, headers=team.owner_headers
            )
            assert_problem(response, 422, "VALIDATION_ERROR")

    async def test_member_is_403(self, client: AsyncClient, make_team: MakeTeam) -> None:
        team = await make_team()
        response = await client.post(
            team.url("/api-keys"),
            json={"name": "x", "scopes": ["orders:read"]},
            headers=team.member_headers,
        )
        assert_problem(response, 403, "FORBIDDEN")
        assert_problem(
            await client.get(team.url("/api-keys"), headers=team.member_headers), 403, "FORBIDDEN"
        )


class TestAuthentication:
    async def test_key_never_reaches_routes_of_people(
        self, client: AsyncClient, make_team: MakeTeam, make_key: MakeKey
    ) -> None:
        team = await make_team()
        key = await make_key(team)
        for method, url in (
            ("GET", ME),
            ("GET", "/api/v1/users"),
            ("GET", "/api/v1/organizations"),
            ("GET", team.url()),
            ("GET", team.url("/members")),
            ("GET", team.url("/invitations")),
            ("GET", team.url("/api-keys")),
            ("DELETE", team.url()),
        ):
            response = await client.request(method, url, headers=bearer(key))
            assert_problem(response, 403, "INSUFFICIENT_SCOPE")
        assert (await client.get(team.url(), headers=team.owner_headers)).status_code == 200

    async def test_public_catalog_serves_a_key_as_anonymous(
        self, client: AsyncClient, make_team: MakeTeam, make_key: MakeKey
    ) -> None:
        team = await make_team()
        key = await make_key(team)
        for headers in (bearer(key), bearer("sk_unknown")):
            response = await client.get("/api/v1/products", headers=headers)
            assert response.status_code == 200

    async def test_unknown_deleted_and_deleted_org_keys_are_401_at_once(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        db_conn: asyncpg.Connection,
    ) -> None:
        assert_problem(await client.get(ME, headers=bearer("sk_" + "a" * 43)), 401, "UNAUTHORIZED")
        team = await make_team()
        key = await make_key(team)
        # Warm the cache: a cached lookup must not outlive the delete.
        assert_problem(await client.get(ME, headers=bearer(key)), 403, "INSUFFICIENT_SCOPE")
        key_id = await db_conn.fetchval("SELECT id FROM api_keys")
        response = await client.delete(team.url(f"/api-keys/{key_id}"), headers=team.admin_headers)
        assert response.status_code == 204
        response = await client.get(ME, headers=bearer(key))
        assert_problem(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"
        listed = (await client.get(team.url("/api-keys"), headers=team.owner_headers)).json()
        assert listed["items"] == []
        # A key of an organization that is deleted stops at once too.
        other = await make_team("Other")
        other_key = await make_key(other)
        assert_problem(await client.get(ME, headers=bearer(other_key)), 403, "INSUFFICIENT_SCOPE")
        assert (await client.delete(other.url(), headers=other.owner_headers)).status_code == 204
        assert_problem(await client.get(ME, headers=bearer(other_key)), 401, "UNAUTHORIZED")

    async def test_expired_key_is_401(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team()
        key = await make_key(team, expires_in_days=1)
        await db_conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second'")
        assert_problem(await client.get(ME, headers=bearer(key)), 401, "UNAUTHORIZED")

    async def test_delete_unknown_or_other_orgs_key_is_404(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team()
        other = await make_team("Other")
        await make_key(other)
        other_key_id = await db_conn.fetchval("SELECT id FROM api_keys")
        for key_id in (uuid.uuid4(), other_key_id):
            response = await client.delete(
                team.url(f"/api-keys/{key_id}"), headers=team.owner_headers
            )
            assert_problem(response, 404, "NOT_FOUND")
        assert await db_conn.fetchval("SELECT deleted_at FROM api_keys") is None


class TestUsage:
    async def test_last_used_at_written_at_most_once_a_minute(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        make_key: MakeKey,
        db_conn: asyncpg.Connection,
        redis_client: Redis,
    ) -> None:
        team = await make_team()
        key = await make_key(team)
        await client.get(ME, headers=bearer(key))
        first = await db_conn.fetchval("SELECT last_used_at FROM api_keys")
        assert first is not None
        await db_conn.execute("UPDATE api_keys SET last_used_at = now() - interval '1 hour'")
        back = await db_conn.fetchval("SELECT last_used_at FROM api_keys")
        for _ in range(3):
            await client.get(ME, headers=bearer(key))
        assert await db_conn.fetchval("SELECT last_used_at FROM api_keys") == back
        # A minute later (the gate's expiry) the next request writes it again.
        [gate] = [name async for name in redis_client.scan_iter("apikey:used:*")]
        assert 0 < await redis_client.ttl(gate) <= 60
        await redis_client.delete(gate)
        await client.get(ME, headers=bearer(key))
        assert await db_conn.fetchval("SELECT last_used_at FROM api_keys") > back

    async def test_each_key_has_its_own_rate_limit(
        self, make_client: object, make_team: MakeTeam, make_key: MakeKey
    ) -> None:
        team = await make_team()
        key, other = await make_key(team), await make_key(team)
        limited = await make_client(rate_limit_api_key="2/minute")  # type: ignore[operator]
        for _ in range(2):
            assert_problem(await limited.get(ME, headers=bearer(key)), 403, "INSUFFICIENT_SCOPE")
        response = await limited.get(ME, headers=bearer(key))
        body = assert_problem(response, 429, "RATE_LIMITED")
        assert int(response.headers["retry-after"]) == body["retry_after"] >= 1
        assert_problem(await limited.get(ME, headers=bearer(other)), 403, "INSUFFICIENT_SCOPE")
