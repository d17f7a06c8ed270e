"""Models and migrations never drift, and every revision downgrades."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.cli import _alembic_config, run_migrations
from app.models import metadata
from tests.conftest import create_database, drop_database
from tests.services import Services


@pytest.fixture
async def scratch_url(services: Services) -> AsyncIterator[str]:
    name = f"saas_migrations_{secrets.token_hex(4)}"
    url = await create_database(services.database_url, name)
    yield url
    await drop_database(services.database_url, name)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def _autogenerate_diff(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_diff)
    finally:
        await engine.dispose()


async def test_models_match_migrations(scratch_url: str) -> None:
    await asyncio.to_thread(run_migrations, scratch_url)
    assert await _autogenerate_diff(scratch_url) == []


async def test_every_revision_downgrades_and_upgrades_again(scratch_url: str) -> None:
    config = _alembic_config(scratch_url)
    assert isinstance(config, Config)
    revisions = list(ScriptDirectory.from_config(config).walk_revisions())
    assert revisions, "no migrations found"
    await asyncio.to_thread(command.upgrade, config, "head")
    for _ in revisions:
        await asyncio.to_thread(command.downgrade, config, "-1")
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await _autogenerate_diff(scratch_url) == []
