"""The auth routes: registration, login, the OAuth2 form, refresh rotation and logout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient
from jose import jwt
from redis.asyncio import Redis

from app.config import Settings
from app.core.security import Tokens, revoked_session_key
from app.features.users.models import Role
from tests.conftest import DEFAULT_PASSWORD, TEST_JWT_SECRET, UserFactory
from tests.integration.auth.helpers import (
    API,
    age_rotations,
    assert_token_pair,
    bearer,
    claims,
    login,
    sha256,
    without_request_id,
)
from tests.problems import assert_problem

NEW_PASSWORD = "a perfectly long passphrase"


class TestRegister:
    async def test_creates_an_unverified_user_and_a_hashed_verification_token(
        self, client: AsyncClient, db_conn: asyncpg.Connection
    ) -> None:
        response = await client.post(
            f"{API}/auth/register",
            json={"email": "  Ada@Example.COM ", "password": NEW_PASSWORD, "full_name": " Ada "},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {
            "id",
            "email",
            "full_name",
            "role",
            "is_active",
            "is_verified",
            "created_at",
            "updated_at",
        }
        assert body["email"] == "ada@example.com"
        assert body["full_name"] == "Ada"
        assert (body["role"], body["is_active"], body["is_verified"]) == ("user", True, False)
        assert response.headers["location"] == f"/api/v1/users/{body['id']}"
        row = await db_conn.fetchrow("SELECT * FROM users WHERE email = 'ada@example.com'")
        assert row is not None
        assert row["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert NEW_PASSWORD not in row["password_hash"]
        tokens = await db_conn.fetch("SELECT * FROM email_tokens WHERE user_id = $1", row["id"])
        assert [token["purpose"] for token in tokens] == ["verify_email"]
        assert len(tokens[0]["token_hash"]) == 64
        assert tokens[0]["used_at"] is None

    async def test_duplicate_email_in_another_case_is_409_email_taken(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        await make_user(email="taken@example.com")
        response = await client.post(
            f"{API}/auth/register",
            json={"email": "TAKEN@example.com", "password": NEW_PASSWORD, "full_name": "B"},
        )
        assert_problem(response, 409, "EMAIL_TAKEN")
        assert await db_conn.fetchval("SELECT count(*) FROM users") == 1

    @pytest.mark.parametrize(
        ("password", "kind"),
        [
            pytest.param("short7!", "string_too_short", id="too-short"),
            pytest.param("x" * 129, "string_too_long", id="too-long"),
            pytest.param("password1", "value_error", id="common"),
            pytest.param("Baseball", "value_error", id="common-other-case"),
        ],
    )
    async def test_weak_long_or_common_password_is_422_without_echoing_it(
        self, client: AsyncClient, db_conn: asyncpg.Connection, password: str, kind: str
    ) -> None:
        response = await client.post(
            f"{API}/auth/register",
            json={"email": "weak@example.com", "password": password, "full_name": "W"},
        )
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert [(error["loc"], error["type"]) for error in body["errors"]] == [
            (["body", "password"], kind)
        ]
        assert password not in response.text
        assert await db_conn.fetchval("SELECT count(*) FROM users") == 0

    async def test_password_of_128_characters_with_spaces_is_accepted_as_is(
        self, client: AsyncClient
    ) -> None:
        password = " " + "y" * 126 + " "
        response = await client.post(
            f"{API}/auth/register",
            json={"email": "long@example.com", "password": password, "full_name": "L"},
        )
        assert response.status_code == 201
        await login(client, "long@example.com", password)

    async def test_unknown_field_and_bad_email_are_422(self, client: AsyncClient) -> None:
        response = await client.post(
            f"{API}/auth/register",
            json={
                "email": "not-an-email",
                "password": NEW_PASSWORD,
                "full_name": "X",
                "role": "admin",
            },
        )
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert sorted(tuple(error["loc"]) for error in body["errors"]) == [
            ("body", "email"),
            ("body", "role"),
        ]


class TestLogin:
    async def test_returns_a_pair_of_one_new_session_stored_hashed(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="log@example.com")
        pair = await login(client, "LOG@example.com")
        access, refresh = claims(pair["access_token"]), claims(pair["refresh_token"])
        assert (access["type"], refresh["type"]) == ("access", "refresh")
        assert access["sub"] == refresh["sub"] == str(user.id)
        assert access["sid"] == refresh["sid"]
        assert access["role"] == "user"
        rows = await db_conn.fetch("SELECT * FROM refresh_tokens")
        assert len(rows) == 1
        assert rows[0]["jti_hash"] == sha256(refresh["jti"])
        assert str(rows[0]["session_id"]) == refresh["sid"]
        assert (rows[0]["used_at"], rows[0]["revoked_at"]) == (None, None)
        me = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200
        assert me.json()["id"] == str(user.id)

    async def test_wrong_password_and_unknown_email_are_indistinguishable(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="real@example.com")
        wrong = await client.post(
            f"{API}/auth/login", json={"email": "real@example.com", "password": "not-it-at-all"}
        )
        unknown = await client.post(
            f"{API}/auth/login", json={"email": "ghost@example.com", "password": "not-it-at-all"}
        )
        for response in (wrong, unknown):
            assert_problem(response, 401, "INVALID_CREDENTIALS")
            assert response.headers["www-authenticate"] == "Bearer"
        assert without_request_id(wrong.json()) == without_request_id(unknown.json())
        assert wrong.headers.keys() == unknown.headers.keys()

    async def test_deactivated_user_with_the_right_password_is_403_account_disabled(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="off@example.com", is_active=False)
        right = await client.post(
            f"{API}/auth/login", json={"email": "off@example.com", "password": DEFAULT_PASSWORD}
        )
        assert_problem(right, 403, "ACCOUNT_DISABLED")
        wrong = await client.post(
            f"{API}/auth/login", json={"email": "off@example.com", "password": "wrong-password"}
        )
        assert_problem(wrong, 401, "INVALID_CREDENTIALS")

    async def test_hash_made_with_older_parameters_is_upgraded_on_login(
        self,
        make_client: Callable[..., Any],
        make_user: UserFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        await make_user(email="old@example.com")
        stronger: AsyncClient = await make_client(argon2_time_cost=3)
        await login(stronger, "old@example.com")
        stored = await db_conn.fetchval(
            "SELECT password_hash FROM users WHERE email = 'old@example.com'"
        )
        assert stored.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
        await login(stronger, "old@example.com")

    async def test_missing_password_is_422(self, client: AsyncClient) -> None:
        response = await client.post(f"{API}/auth/login", json={"email": "a@example.com"})
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"] == ["body", "password"]


class TestTokenForm:
    async def test_oauth2_password_form_returns_a_pair(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="form@example.com")
        response = await client.post(
            f"{API}/auth/token",
            data={"username": "form@example.com", "password": DEFAULT_PASSWORD},
        )
        pair = assert_token_pair(response)
        me = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert me.json()["email"] == "form@example.com"

    async def test_wrong_password_on_the_form_is_401(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="form@example.com")
        response = await client.post(
            f"{API}/auth/token", data={"username": "form@example.com", "password": "nope-nope"}
        )
        assert_problem(response, 401, "INVALID_CREDENTIALS")

    async def test_form_without_password_is_422(self, client: AsyncClient) -> None:
        response = await client.post(f"{API}/auth/token", data={"username": "a@example.com"})
        assert_problem(response, 422, "VALIDATION_ERROR")


class TestRefresh:
    async def test_rotates_and_the_old_refresh_token_stops_working(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        await make_user(email="rot@example.com")
        first = await login(client, "rot@example.com")
        response = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        second = assert_token_pair(response)
        assert claims(second["refresh_token"])["sid"] == claims(first["refresh_token"])["sid"]
        assert second["refresh_token"] != first["refresh_token"]
        me = await client.get(f"{API}/users/me", headers=bearer(second["access_token"]))
        assert me.status_code == 200
        rows = await db_conn.fetch(
            "SELECT jti_hash, used_at, revoked_at FROM refresh_tokens ORDER BY created_at"
        )
        assert [(row["used_at"] is not None, row["revoked_at"]) for row in rows] == [
            (True, None),
            (False, None),
        ]

    async def test_reuse_of_a_rotated_token_revokes_that_session_but_not_another(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        db_conn: asyncpg.Connection,
        redis_client: Redis,
        settings: Settings,
    ) -> None:
        await make_user(email="theft@example.com")
        stolen = await login(client, "theft@example.com")
        other = await login(client, "theft@example.com")
        rotated = assert_token_pair(
            await client.post(
                f"{API}/auth/refresh", json={"refresh_token": stolen["refresh_token"]}
            )
        )
        await age_rotations(db_conn)  # past the grace window
        reuse = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": stolen["refresh_token"]}
        )
        assert_problem(reuse, 401, "UNAUTHORIZED")
        # The whole session is gone: the refresh token and access token it last issued too.
        again = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
        )
        assert_problem(again, 401, "UNAUTHORIZED")
        gone = await client.get(f"{API}/users/me", headers=bearer(rotated["access_token"]))
        assert_problem(gone, 401, "UNAUTHORIZED")
        sid = claims(stolen["refresh_token"])["sid"]
        revoked = await db_conn.fetchval(
            "SELECT bool_and(revoked_at IS NOT NULL) FROM refresh_tokens WHERE session_id = $1",
            sid,
        )
        assert revoked is True
        assert await db_conn.fetchval(
            "SELECT revoked_at IS NOT NULL FROM login_sessions WHERE id = $1", sid
        )
        ttl = await redis_client.ttl(revoked_session_key(claims(stolen["access_token"])["sid"]))
        assert 0 < ttl <= settings.access_token_ttl_seconds
        # The user's other session goes on.
        ok = await client.get(f"{API}/users/me", headers=bearer(other["access_token"]))
        assert ok.status_code == 200
        assert_token_pair(
            await client.post(f"{API}/auth/refresh", json={"refresh_token": other["refresh_token"]})
        )

    async def test_access_token_presented_as_refresh_token_is_401(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="mix@example.com")
        pair = await login(client, "mix@example.com")
        response = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": pair["access_token"]}
        )
        assert_problem(response, 401, "UNAUTHORIZED")
        # ...and that mistake is not mistaken for theft: the session goes on.
        assert_token_pair(
            await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        )

    async def test_refresh_token_presented_as_access_token_is_401(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="mix@example.com")
        pair = await login(client, "mix@example.com")
        response = await client.get(f"{API}/users/me", headers=bearer(pair["refresh_token"]))
        assert_problem(response, 401, "UNAUTHORIZED")

    @pytest.mark.parametrize(
        "forge",
        [
            pytest.param(lambda c: c | {"exp": int(time.time()) - 5}, id="expired"),
            pytest.param(lambda c: {k: v for k, v in c.items() if k != "exp"}, id="no-exp"),
            pytest.param(lambda c: c | {"aud": "elsewhere"}, id="wrong-aud"),
            pytest.param(lambda c: c | {"iss": "elsewhere"}, id="wrong-iss"),
        ],
    )
    async def test_forged_refresh_token_is_401(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        forge: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        await make_user(email="forge@example.com")
        pair = await login(client, "forge@example.com")
        token = jwt.encode(forge(claims(pair["refresh_token"])), TEST_JWT_SECRET, "HS256")
        response = await client.post(f"{API}/auth/refresh", json={"refresh_token": token})
        assert_problem(response, 401, "UNAUTHORIZED")

    async def test_refresh_token_signed_with_another_key_is_401(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="forge@example.com")
        pair = await login(client, "forge@example.com")
        token = jwt.encode(claims(pair["refresh_token"]), "another-key-" + "q" * 40, "HS256")
        response = await client.post(f"{API}/auth/refresh", json={"refresh_token": token})
        assert_problem(response, 401, "UNAUTHORIZED")

    async def test_validly_signed_but_never_issued_refresh_token_is_401(
        self, client: AsyncClient, make_user: UserFactory, settings: Settings
    ) -> None:
        user = await make_user()
        token, _ = Tokens(settings).encode(
            type="refresh", subject=user.id, session_id=user.id, version=0
        )
        response = await client.post(f"{API}/auth/refresh", json={"refresh_token": token})
        assert_problem(response, 401, "UNAUTHORIZED")

    async def test_garbage_is_401_and_a_missing_field_422(self, client: AsyncClient) -> None:
        garbage = await client.post(f"{API}/auth/refresh", json={"refresh_token": "garbage"})
        assert_problem(garbage, 401, "UNAUTHORIZED")
        missing = await client.post(f"{API}/auth/refresh", json={})
        assert_problem(missing, 422, "VALIDATION_ERROR")

    async def test_refresh_of_a_deactivated_user_is_401(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="gone@example.com")
        pair = await login(client, "gone@example.com")
        await db_conn.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
        response = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert_problem(response, 401, "UNAUTHORIZED")


class TestLogout:
    async def test_ends_one_session_at_once_and_not_another(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        await make_user(email="out@example.com")
        ending = await login(client, "out@example.com")
        staying = await login(client, "out@example.com")
        response = await client.post(
            f"{API}/auth/logout",
            json={"refresh_token": ending["refresh_token"]},
            headers=bearer(ending["access_token"]),
        )
        assert response.status_code == 204
        assert response.content == b""
        gone = await client.get(f"{API}/users/me", headers=bearer(ending["access_token"]))
        assert_problem(gone, 401, "UNAUTHORIZED")
        refused = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": ending["refresh_token"]}
        )
        assert_problem(refused, 401, "UNAUTHORIZED")
        ok = await client.get(f"{API}/users/me", headers=bearer(staying["access_token"]))
        assert ok.status_code == 200
        assert_token_pair(
            await client.post(
                f"{API}/auth/refresh", json={"refresh_token": staying["refresh_token"]}
            )
        )
        sid = claims(ending["access_token"])["sid"]
        assert await db_conn.fetchval(
            "SELECT revoked_at IS NOT NULL FROM refresh_tokens WHERE session_id = $1", sid
        )

    async def test_needs_a_bearer_token(self, client: AsyncClient) -> None:
        response = await client.post(f"{API}/auth/logout", json={"refresh_token": "x"})
        assert_problem(response, 401, "UNAUTHORIZED")

    async def test_a_foreign_refresh_token_does_not_end_the_other_users_session(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="me@example.com")
        await make_user(email="you@example.com")
        mine = await login(client, "me@example.com")
        yours = await login(client, "you@example.com")
        response = await client.post(
            f"{API}/auth/logout",
            json={"refresh_token": yours["refresh_token"]},
            headers=bearer(mine["access_token"]),
        )
        assert response.status_code == 204
        ok = await client.get(f"{API}/users/me", headers=bearer(yours["access_token"]))
        assert ok.status_code == 200
        gone = await client.get(f"{API}/users/me", headers=bearer(mine["access_token"]))
        assert_problem(gone, 401, "UNAUTHORIZED")


class TestRoleInTokens:
    async def test_admin_login_carries_the_admin_role(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="boss@example.com", role=Role.admin)
        pair = await login(client, "boss@example.com")
        assert claims(pair["access_token"])["role"] == "admin"
        listing = await client.get(f"{API}/users", headers=bearer(pair["access_token"]))
        assert listing.status_code == 200


class TestConcurrentRefresh:
    async def test_two_refreshes_with_one_token_at_once_get_the_same_pair(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        """Two tabs refreshing at once: within the grace window both get the one successor
        pair that was issued, and the session goes on."""
        await make_user(email="race@example.com")
        pair = await login(client, "race@example.com")
        body = {"refresh_token": pair["refresh_token"]}
        first, second = await asyncio.gather(
            client.post(f"{API}/auth/refresh", json=body),
            client.post(f"{API}/auth/refresh", json=body),
        )
        assert assert_token_pair(first) == assert_token_pair(second)
        me = await client.get(f"{API}/users/me", headers=bearer(first.json()["access_token"]))
        assert me.status_code == 200
        after = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": first.json()["refresh_token"]}
        )
        assert_token_pair(after)

    async def test_without_a_grace_window_the_loser_ends_the_session(
        self, make_client: Callable[..., Any], make_user: UserFactory
    ) -> None:
        client: AsyncClient = await make_client(refresh_reuse_grace_seconds=0)
        await make_user(email="race@example.com")
        pair = await login(client, "race@example.com")
        body = {"refresh_token": pair["refresh_token"]}
        first, second = await asyncio.gather(
            client.post(f"{API}/auth/refresh", json=body),
            client.post(f"{API}/auth/refresh", json=body),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 401]
        winner = first if first.status_code == 200 else second
        # The loser presented a used token: theft as far as the server can tell, so even the
        # winner's new pair dies with the session.
        after = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": winner.json()["refresh_token"]}
        )
        assert_problem(after, 401, "UNAUTHORIZED")
