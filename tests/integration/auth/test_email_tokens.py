"""Verification and reset tokens: single use, expiring, stored hashed.

The tokens here are written straight to the database (as the SHA-256 the server keeps), so
every edge can be set up; `test_email_flows.py` follows the real emails end to end.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from httpx import AsyncClient

from app.core.database import uuid7
from app.features.auth.router import FORGOT_PASSWORD_FLOOR_SECONDS
from app.features.users.models import User
from tests.conftest import DEFAULT_PASSWORD, HeadersFactory, UserFactory
from tests.integration.auth.helpers import API, bearer, login, sha256, without_request_id
from tests.problems import assert_problem

NEW_PASSWORD = "brand new passphrase"


async def plant_token(
    db_conn: asyncpg.Connection, user: User, purpose: str, *, expires_in: int = 3600
) -> str:
    token = secrets.token_urlsafe(32)
    await db_conn.execute(
        "INSERT INTO email_tokens (id, user_id, purpose, token_hash, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        uuid7(),
        user.id,
        purpose,
        sha256(token),
        datetime.now(UTC) + timedelta(seconds=expires_in),
    )
    return token


class TestVerifyEmail:
    async def test_verifies_and_the_same_token_again_is_still_204(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(is_verified=False)
        token = await plant_token(db_conn, user, "verify_email")
        first = await client.post(f"{API}/auth/verify-email", json={"token": token})
        assert first.status_code == 204
        assert await db_conn.fetchval("SELECT is_verified FROM users WHERE id = $1", user.id)
        assert await db_conn.fetchval(
            "SELECT used_at IS NOT NULL FROM email_tokens WHERE token_hash = $1", sha256(token)
        )
        again = await client.post(f"{API}/auth/verify-email", json={"token": token})
        assert again.status_code == 204

    async def test_unknown_expired_or_wrong_kind_of_token_is_400(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(is_verified=False)
        expired = await plant_token(db_conn, user, "verify_email", expires_in=-1)
        reset = await plant_token(db_conn, user, "reset_password")
        for token in ("never-issued", expired, reset):
            response = await client.post(f"{API}/auth/verify-email", json={"token": token})
            assert_problem(response, 400, "INVALID_TOKEN")
        assert not await db_conn.fetchval("SELECT is_verified FROM users WHERE id = $1", user.id)

    async def test_a_used_token_of_a_still_unverified_user_is_400(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(is_verified=False)
        token = await plant_token(db_conn, user, "verify_email")
        await db_conn.execute("UPDATE email_tokens SET used_at = now()")
        response = await client.post(f"{API}/auth/verify-email", json={"token": token})
        assert_problem(response, 400, "INVALID_TOKEN")

    async def test_empty_token_is_422(self, client: AsyncClient) -> None:
        response = await client.post(f"{API}/auth/verify-email", json={"token": ""})
        assert_problem(response, 422, "VALIDATION_ERROR")


class TestResendVerification:
    async def test_issues_a_new_token_for_an_unverified_user(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user = await make_user(is_verified=False)
        response = await client.post(
            f"{API}/auth/verify-email/resend", headers=await auth_headers(user)
        )
        assert response.status_code == 202
        assert response.content == b""
        count = await db_conn.fetchval(
            "SELECT count(*) FROM email_tokens WHERE user_id = $1 AND purpose = 'verify_email'",
            user.id,
        )
        assert count == 1

    async def test_sends_nothing_to_a_verified_user(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user = await make_user(is_verified=True)
        response = await client.post(
            f"{API}/auth/verify-email/resend", headers=await auth_headers(user)
        )
        assert response.status_code == 202
        assert await db_conn.fetchval("SELECT count(*) FROM email_tokens") == 0

    async def test_needs_a_token(self, client: AsyncClient) -> None:
        assert_problem(await client.post(f"{API}/auth/verify-email/resend"), 401, "UNAUTHORIZED")


class TestForgotPassword:
    async def test_same_answer_for_known_and_unknown_emails(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="known@example.com")
        known = await client.post(
            f"{API}/auth/forgot-password", json={"email": "KNOWN@example.com"}
        )
        unknown = await client.post(
            f"{API}/auth/forgot-password", json={"email": "unknown@example.com"}
        )
        assert (known.status_code, known.content) == (202, b"")
        assert (unknown.status_code, unknown.content) == (202, b"")
        assert known.headers.keys() == unknown.headers.keys()
        rows = await db_conn.fetch("SELECT user_id, purpose, expires_at FROM email_tokens")
        assert [(row["user_id"], row["purpose"]) for row in rows] == [(user.id, "reset_password")]
        lifetime = rows[0]["expires_at"] - datetime.now(UTC)
        assert timedelta(minutes=59) < lifetime <= timedelta(hours=1)

    async def test_both_answers_wait_for_the_same_floor(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="known@example.com")
        for email in ("known@example.com", "unknown@example.com"):
            started = time.perf_counter()
            response = await client.post(f"{API}/auth/forgot-password", json={"email": email})
            assert response.status_code == 202
            assert time.perf_counter() - started >= FORGOT_PASSWORD_FLOOR_SECONDS

    async def test_a_deactivated_account_gets_no_reset_token(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        await make_user(email="off@example.com", is_active=False)
        response = await client.post(
            f"{API}/auth/forgot-password", json={"email": "off@example.com"}
        )
        assert response.status_code == 202
        assert await db_conn.fetchval("SELECT count(*) FROM email_tokens") == 0

    async def test_invalid_email_is_422(self, client: AsyncClient) -> None:
        response = await client.post(f"{API}/auth/forgot-password", json={"email": "nope"})
        assert_problem(response, 422, "VALIDATION_ERROR")


class TestResetPassword:
    async def test_sets_the_password_once_and_ends_every_session(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="reset@example.com")
        session = await login(client, "reset@example.com")
        token = await plant_token(db_conn, user, "reset_password")
        other = await plant_token(db_conn, user, "reset_password")
        response = await client.post(
            f"{API}/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 204
        stale = await client.get(f"{API}/users/me", headers=bearer(session["access_token"]))
        assert_problem(stale, 401, "UNAUTHORIZED")
        refreshed = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": session["refresh_token"]}
        )
        assert_problem(refreshed, 401, "UNAUTHORIZED")
        assert await db_conn.fetchval(
            "SELECT bool_and(revoked_at IS NOT NULL) FROM refresh_tokens WHERE user_id = $1",
            user.id,
        )
        await login(client, "reset@example.com", NEW_PASSWORD)
        old = await client.post(
            f"{API}/auth/login", json={"email": "reset@example.com", "password": DEFAULT_PASSWORD}
        )
        assert_problem(old, 401, "INVALID_CREDENTIALS")
        # Single use, and the other outstanding reset link is used up with it.
        for used in (token, other):
            again = await client.post(
                f"{API}/auth/reset-password", json={"token": used, "new_password": NEW_PASSWORD}
            )
            assert_problem(again, 400, "INVALID_TOKEN")

    @pytest.mark.parametrize("kind", ["expired", "verify_email", "unknown", "inactive"])
    async def test_a_token_that_is_not_a_live_reset_token_is_400(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        db_conn: asyncpg.Connection,
        kind: str,
    ) -> None:
        user = await make_user(is_active=kind != "inactive")
        if kind == "unknown":
            token = secrets.token_urlsafe(32)
        else:
            purpose = "verify_email" if kind == "verify_email" else "reset_password"
            expires_in = -1 if kind == "expired" else 3600
            token = await plant_token(db_conn, user, purpose, expires_in=expires_in)
        response = await client.post(
            f"{API}/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD}
        )
        body = assert_problem(response, 400, "INVALID_TOKEN")
        assert without_request_id(body)["detail"] == "This link is invalid or has expired"
        stored = await db_conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
        assert stored == user.password_hash

    async def test_a_common_new_password_is_422_and_keeps_the_token(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user()
        token = await plant_token(db_conn, user, "reset_password")
        response = await client.post(
            f"{API}/auth/reset-password", json={"token": token, "new_password": "sunshine"}
        )
        assert_problem(response, 422, "VALIDATION_ERROR")
        assert await db_conn.fetchval("SELECT used_at IS NULL FROM email_tokens")
