"""The `saas` command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings

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
