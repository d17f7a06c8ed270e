"""The account rules under bursts and across flows (issue 12): failed logins counted before the
verify, the password-change oracle, reset links voided by every credential change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from app.features.users.models import Role
from tests.conftest import DEFAULT_PASSWORD, UserFactory
from tests.integration.auth.helpers import API, assert_token_pair, bearer, login
from tests.integration.auth.test_email_tokens import plant_token
from tests.problems import assert_problem

NEW_PASSWORD = "another long passphrase"
WRONG = "wrong-guess-1"


def client_from(app: FastAPI, address: str) -> AsyncClient:
    return AsyncClient(
        transport=ASGITransport(app=app, client=(address, 40000)), base_url="http://testserver"
    )


async def burst(app: FastAPI, email: str, size: int, password: str = WRONG) -> list[int]:
    """`size` logins for `email` at once, each from its own address (no per-IP limit helps)."""
    clients = [client_from(app, f"198.51.{n // 200}.{n % 200 + 1}") for n in range(size)]
    try:
        responses = await asyncio.gather(
            *(
                http.post(f"{API}/auth/login", json={"email": email, "password": password})
                for http in clients
            )
        )
    finally:
        for http in clients:
            await http.aclose()
    return [response.status_code for response in responses]


class TestFailedLoginBurst:
    async def test_a_wide_burst_checks_no_more_passwords_than_the_limit(
        self, make_client: Callable[..., Any], make_user: UserFactory
    ) -> None:
        """80 simultaneous wrong passwords from 80 addresses: at most 20 verified (401)."""
        apps: list[FastAPI] = []
        await make_client(setup=apps.append, argon2_memory_kib=8 * 1024, argon2_time_cost=1)
        for round_ in range(5):  # the race, again and again (a 1-in-10 failure shows up)
            email = f"victim{round_}@example.com"
            await make_user(email=email)
            statuses = await burst(apps[0], email, 80)
            assert statuses.count(401) == 20, statuses
            assert statuses.count(429) == 60, statuses
            # ...and the right password is locked out as well now, from anywhere.
            assert (await burst(apps[0], email, 1, DEFAULT_PASSWORD)) == [429]

    async def test_an_unknown_email_is_counted_before_the_dummy_verify_too(
        self, make_client: Callable[..., Any]
    ) -> None:
        apps: list[FastAPI] = []
        await make_client(setup=apps.append, rate_limit_failed_logins="5/hour")
        statuses = await burst(apps[0], "nobody@example.com", 30)
        assert sorted(statuses) == [401] * 5 + [429] * 25

    async def test_a_success_clears_the_count_and_a_locked_answer_carries_retry_after(
        self, make_client: Callable[..., Any], make_user: UserFactory
    ) -> None:
        client: AsyncClient = await make_client(rate_limit_failed_logins="2/hour")
        await make_user(email="clear@example.com")

        async def attempt(password: str) -> Response:
            return await client.post(
                f"{API}/auth/login", json={"email": "clear@example.com", "password": password}
            )

        assert (await attempt("wrong-one-1")).status_code == 401
        await login(client, "clear@example.com")  # the second slot, then cleared
        assert (await attempt("wrong-one-1")).status_code == 401
        assert (await attempt("wrong-one-1")).status_code == 401
        locked = await attempt(DEFAULT_PASSWORD)
        body = assert_problem(locked, 429, "RATE_LIMITED")
        assert 3590 <= int(locked.headers["retry-after"]) <= 3600
        assert body["retry_after"] == int(locked.headers["retry-after"])
        assert locked.headers["x-ratelimit-remaining"] == "0"


class TestPasswordChangeOracle:
    async def test_wrong_current_passwords_share_the_login_bucket_and_end_in_429(
        self, make_client: Callable[..., Any], make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        client: AsyncClient = await make_client(rate_limit_failed_logins="3/hour")
        user = await make_user(email="oracle@example.com")
        pair = await login(client, "oracle@example.com")  # a session; the count is cleared
        headers = bearer(pair["access_token"])
        wrong = await client.post(
            f"{API}/auth/login", json={"email": "oracle@example.com", "password": "nope-nope"}
        )
        assert_problem(wrong, 401, "INVALID_CREDENTIALS")
        for _ in range(2):
            response = await client.post(
                f"{API}/users/me/password",
                json={"current_password": "guess-guess", "new_password": NEW_PASSWORD},
                headers=headers,
            )
            assert_problem(response, 400, "INVALID_CREDENTIALS")
        # The limit is reached: the right current password is refused too, and login as well.
        over = await client.post(
            f"{API}/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
            headers=headers,
        )
        body = assert_problem(over, 429, "RATE_LIMITED")
        assert int(over.headers["retry-after"]) == body["retry_after"] > 3500
        locked = await client.post(
            f"{API}/auth/login", json={"email": "oracle@example.com", "password": DEFAULT_PASSWORD}
        )
        assert_problem(locked, 429, "RATE_LIMITED")
        stored = await db_conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
        assert stored == user.password_hash

    async def test_a_burst_of_wrong_current_passwords_verifies_at_most_the_limit(
        self, make_client: Callable[..., Any], make_user: UserFactory
    ) -> None:
        client: AsyncClient = await make_client(rate_limit_failed_logins="4/hour")
        await make_user(email="burst@example.com")
        headers = bearer((await login(client, "burst@example.com"))["access_token"])
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{API}/users/me/password",
                    json={"current_password": f"guess-{n:04d}", "new_password": NEW_PASSWORD},
                    headers=headers,
                )
                for n in range(20)
            )
        )
        assert sorted(response.status_code for response in responses) == [400] * 4 + [429] * 16

    async def test_the_right_password_clears_the_count(
        self, make_client: Callable[..., Any], make_user: UserFactory
    ) -> None:
        client: AsyncClient = await make_client(rate_limit_failed_logins="2/hour")
        await make_user(email="fine@example.com")
        headers = bearer((await login(client, "fine@example.com"))["access_token"])
        wrong = await client.post(
            f"{API}/users/me/password",
            json={"current_password": "guess-guess", "new_password": NEW_PASSWORD},
            headers=headers,
        )
        assert_problem(wrong, 400, "INVALID_CREDENTIALS")
        changed = await client.post(
            f"{API}/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
            headers=headers,
        )
        assert_token_pair(changed)
        for _ in range(2):
            response = await client.post(
                f"{API}/auth/login", json={"email": "fine@example.com", "password": "x" * 10}
            )
            assert_problem(response, 401, "INVALID_CREDENTIALS")
        # Cleared by the change, so the two failures above fill the window only now.
        over = await client.post(
            f"{API}/auth/login", json={"email": "fine@example.com", "password": NEW_PASSWORD}
        )
        assert_problem(over, 429, "RATE_LIMITED")


class TestResetLinksVoided:
    async def reset_with(self, client: AsyncClient, token: str) -> Response:
        return await client.post(
            f"{API}/auth/reset-password", json={"token": token, "new_password": "hijacked pass 1"}
        )

    async def test_a_password_change_voids_earlier_reset_links(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="change@example.com")
        link = await plant_token(db_conn, user, "reset_password")
        verify = await plant_token(db_conn, user, "verify_email")
        pair = await login(client, "change@example.com")
        changed = await client.post(
            f"{API}/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(pair["access_token"]),
        )
        assert_token_pair(changed)
        assert_problem(await self.reset_with(client, link), 400, "INVALID_TOKEN")
        await login(client, "change@example.com", NEW_PASSWORD)
        # A verification link is no credential: it still verifies.
        verified = await client.post(f"{API}/auth/verify-email", json={"token": verify})
        assert verified.status_code == 204

    async def test_a_role_change_and_a_deactivation_void_reset_links(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        admin = await make_user(email="root@example.com", role=Role.admin)
        promoted = await make_user(email="promoted@example.com")
        leaving = await make_user(email="leaving@example.com")
        promoted_link = await plant_token(db_conn, promoted, "reset_password")
        leaving_link = await plant_token(db_conn, leaving, "reset_password")
        admin_headers = bearer((await login(client, "root@example.com"))["access_token"])
        response = await client.patch(
            f"{API}/users/{promoted.id}", json={"role": "admin"}, headers=admin_headers
        )
        assert response.status_code == 200, response.text
        assert_problem(await self.reset_with(client, promoted_link), 400, "INVALID_TOKEN")
        response = await client.patch(
            f"{API}/users/{leaving.id}", json={"is_active": False}, headers=admin_headers
        )
        assert response.status_code == 200, response.text
        await db_conn.execute("UPDATE users SET is_active = true WHERE id = $1", leaving.id)
        assert_problem(await self.reset_with(client, leaving_link), 400, "INVALID_TOKEN")
        assert admin.id != promoted.id
        unused = await db_conn.fetchval(
            "SELECT count(*) FROM email_tokens WHERE purpose = 'reset_password' AND used_at IS NULL"
        )
        assert unused == 0

    async def test_closing_ones_own_account_voids_reset_links(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="closing@example.com")
        link = await plant_token(db_conn, user, "reset_password")
        pair = await login(client, "closing@example.com")
        response = await client.delete(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert response.status_code == 204
        await db_conn.execute("UPDATE users SET is_active = true WHERE id = $1", user.id)
        assert_problem(await self.reset_with(client, link), 400, "INVALID_TOKEN")

    async def test_a_renaming_keeps_reset_links(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="rename@example.com")
        link = await plant_token(db_conn, user, "reset_password")
        pair = await login(client, "rename@example.com")
        response = await client.patch(
            f"{API}/users/me", json={"full_name": "New Name"}, headers=bearer(pair["access_token"])
        )
        assert response.status_code == 200
        assert (await self.reset_with(client, link)).status_code == 204
