"""`saas create-admin`: creates or promotes an admin, with the password policy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from click.testing import Result
from httpx import AsyncClient
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from tests.conftest import TEST_JWT_SECRET, UserFactory
from tests.integration.auth.helpers import API, bearer, login
from tests.problems import assert_problem
from tests.services import Services

runner = CliRunner()
PASSWORD = "an admin passphrase"


@pytest.fixture(autouse=True)
def _environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str, services: Services
) -> Iterator[None]:
    monkeypatch.setenv("APP_DATABASE_URL", database_url)
    monkeypatch.setenv("APP_REDIS_URL", services.redis_url)
    monkeypatch.setenv("APP_JWT_SECRET", TEST_JWT_SECRET)
    monkeypatch.setenv("APP_ENVIRONMENT", "test")
    monkeypatch.setenv("APP_STORAGE_URL", services.storage_url)
    monkeypatch.setenv("APP_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def create_admin(*args: str, stdin: str | None = None) -> Result:
    return await asyncio.to_thread(
        runner.invoke, cli, ["create-admin", *args], input=stdin, catch_exceptions=False
    )


class TestCreateAdmin:
    async def test_creates_a_verified_admin_from_stdin(
        self, db_conn: asyncpg.Connection, client: AsyncClient
    ) -> None:
        result = await create_admin(
            "--email", "Root@Example.com", "--password-stdin", stdin=PASSWORD + "\n"
        )
        assert result.exit_code == 0, result.output
        assert "admin created: root@example.com" in result.output
        assert PASSWORD not in result.output
        row = await db_conn.fetchrow("SELECT * FROM users WHERE email = 'root@example.com'")
        assert row is not None
        assert (row["role"], row["is_active"], row["is_verified"]) == ("admin", True, True)
        pair = await login(client, "root@example.com", PASSWORD)
        listing = await client.get(f"{API}/users", headers=bearer(pair["access_token"]))
        assert listing.status_code == 200

    async def test_promotes_an_existing_account_and_ends_its_tokens(
        self, make_user: UserFactory, db_conn: asyncpg.Connection, client: AsyncClient
    ) -> None:
        await make_user(email="staff@example.com", is_active=False)
        result = await create_admin("--email", "staff@example.com", stdin=f"{PASSWORD}\n" * 2)
        assert result.exit_code == 0, result.output
        assert "admin promoted: staff@example.com" in result.output
        row = await db_conn.fetchrow("SELECT * FROM users WHERE email = 'staff@example.com'")
        assert row is not None
        assert (row["role"], row["is_active"], row["token_version"]) == ("admin", True, 1)
        assert await db_conn.fetchval("SELECT count(*) FROM users") == 1
        await login(client, "staff@example.com", PASSWORD)

    @pytest.mark.parametrize(
        "password", ["short", "password123", "y" * 129], ids=["short", "common", "long"]
    )
    async def test_refuses_a_password_against_the_policy(
        self, db_conn: asyncpg.Connection, password: str
    ) -> None:
        result = await create_admin(
            "--email", "root@example.com", "--password-stdin", stdin=password + "\n"
        )
        assert result.exit_code == 2
        assert "error: the password" in result.output
        assert await db_conn.fetchval("SELECT count(*) FROM users") == 0

    async def test_refuses_an_invalid_email(self, db_conn: asyncpg.Connection) -> None:
        result = await create_admin("--email", "root", "--password-stdin", stdin=PASSWORD)
        assert result.exit_code == 2
        assert "not a valid email" in result.output
        assert await db_conn.fetchval("SELECT count(*) FROM users") == 0

    async def test_the_promoted_accounts_old_tokens_fail(
        self, make_user: UserFactory, client: AsyncClient
    ) -> None:
        await make_user(email="old@example.com")
        pair = await login(client, "old@example.com")
        result = await create_admin(
            "--email", "old@example.com", "--password-stdin", stdin=PASSWORD
        )
        assert result.exit_code == 0, result.output
        stale = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert_problem(stale, 401, "UNAUTHORIZED")
