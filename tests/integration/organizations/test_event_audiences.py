"""Real-time audiences of organization members: who listens to an organization's order events."""

from __future__ import annotations

import uuid

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.reads import ReadConnection
from app.features.events.audience import (
    ADMINS,
    organization_audience,
    user_audience,
    viewer_audiences,
)
from tests.integration.catalog import Login
from tests.integration.organizations.conftest import MakeTeam


async def _audiences(
    db_engine: AsyncEngine, viewers: dict[uuid.UUID, bool]
) -> dict[uuid.UUID, frozenset[str]]:
    connection = ReadConnection(db_engine)
    try:
        return await viewer_audiences(connection, viewers)
    finally:
        await connection.close()


async def test_every_member_listens_to_the_organization_and_an_outsider_does_not(
    make_team: MakeTeam, login: Login, db_engine: AsyncEngine
) -> None:
    team = await make_team()
    outsider, _ = await login()
    org = organization_audience(uuid.UUID(team.id))
    audiences = await _audiences(
        db_engine,
        {team.owner.id: False, team.admin.id: False, team.member.id: False, outsider.id: False},
    )
    for user in (team.owner, team.admin, team.member):
        assert audiences[user.id] == frozenset({user_audience(user.id), org})
    assert audiences[outsider.id] == frozenset({user_audience(outsider.id)})


async def test_a_member_who_leaves_stops_listening(
    client: AsyncClient, make_team: MakeTeam, db_engine: AsyncEngine
) -> None:
    team = await make_team()
    response = await client.delete(
        team.url(f"/members/{team.member.id}"), headers=team.member_headers
    )
    assert response.status_code == 204
    audiences = await _audiences(db_engine, {team.member.id: False, team.owner.id: False})
    assert audiences[team.member.id] == frozenset({user_audience(team.member.id)})
    assert organization_audience(uuid.UUID(team.id)) in audiences[team.owner.id]


async def test_a_deleted_organization_is_heard_by_nobody_and_admins_hear_everything(
    client: AsyncClient, make_team: MakeTeam, db_engine: AsyncEngine
) -> None:
    team = await make_team()
    assert (await client.delete(team.url(), headers=team.owner_headers)).status_code == 204
    audiences = await _audiences(db_engine, {team.owner.id: False, team.admin.id: True})
    assert audiences[team.owner.id] == frozenset({user_audience(team.owner.id)})
    assert audiences[team.admin.id] == frozenset({ADMINS})
