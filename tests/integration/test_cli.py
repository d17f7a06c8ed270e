"""The `saas` command."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from tests.conftest import create_database, drop_database
from tests.services import Services

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fresh_settings() -> None:
    get_settings.cache_clear()


def test_openapi_prints_the_document_without_services() -> None:
    result = runner.invoke(cli, ["openapi"], env={"APP_DATABASE_URL": "", "APP_JWT_SECRET": ""})
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["openapi"].startswith("3.")
    assert "/health" in document["paths"]
    assert "HTTPValidationError" not in result.output


def test_commands_refuse_to_start_without_required_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("APP_DATABASE_URL", "APP_REDIS_URL", "APP_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 2
    assert "APP_DATABASE_URL is required" in result.output
    assert "APP_JWT_SECRET is required" in result.output


def test_migrate_applies_migrations(
    monkeypatch: pytest.MonkeyPatch, database_url: str, services: object
) -> None:
    monkeypatch.setenv("APP_DATABASE_URL", database_url)
    monkeypatch.setenv("APP_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("APP_JWT_SECRET", "x" * 40)
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "migrations applied" in result.output


class TestMigrateCheck:
    """`saas migrate --check [--wait N]`: what a pod runs before it starts (deploy/k8s)."""

    @pytest.fixture
    def env(self, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
        monkeypatch.setenv("APP_REDIS_URL", "redis://127.0.0.1:6379/0")
        monkeypatch.setenv("APP_JWT_SECRET", "x" * 40)
        return monkeypatch

    def test_passes_on_a_migrated_database(
        self, env: pytest.MonkeyPatch, database_url: str, services: object
    ) -> None:
        env.setenv("APP_DATABASE_URL", database_url)
        result = runner.invoke(cli, ["migrate", "--check"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("database at head (")

    async def test_fails_on_an_empty_database_and_passes_once_migrated(
        self, env: pytest.MonkeyPatch, services: Services
    ) -> None:
        name = f"check_{uuid.uuid4().hex[:12]}"
        url = await create_database(services.database_url, name)
        try:
            env.setenv("APP_DATABASE_URL", url)
            started = time.monotonic()
            result = await asyncio.to_thread(
                runner.invoke, cli, ["migrate", "--check", "--wait", "1"]
            )
            assert result.exit_code == 1
            assert "database is not at head: at no revision, code at ['" in result.output
            assert time.monotonic() - started >= 1.0  # it kept checking for --wait seconds
            applied = await asyncio.to_thread(runner.invoke, cli, ["migrate"])
            assert applied.exit_code == 0, applied.output
            again = await asyncio.to_thread(runner.invoke, cli, ["migrate", "--check"])
            assert again.exit_code == 0, again.output
        finally:
            await drop_database(services.database_url, name)

    def test_fails_when_the_database_does_not_answer(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("APP_DATABASE_URL", "postgresql+asyncpg://nobody@127.0.0.1:1/none")
        result = runner.invoke(cli, ["migrate", "--check"])
        assert result.exit_code == 1
        assert "database is not at head: " in result.output
        assert "nobody" not in result.output
