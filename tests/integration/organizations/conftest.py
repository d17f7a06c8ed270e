"""Factories of the organizations tests: organizations made through the API, members and keys."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from app.features.organizations.models import OrgRole
from app.features.users.models import User
from tests.integration.catalog import Login

ORGS = "/api/v1/organizations"


def org_url(org_id: uuid.UUID | str, tail: str = "") -> str:
    return f"{ORGS}/{org_id}{tail}"


@dataclass
class Team:
    """An organization with one user of each role (and their headers)."""

    id: str
    body: dict[str, Any]
    owner: User
    owner_headers: dict[str, str]
    admin: User
    admin_headers: dict[str, str]
    member: User
    member_headers: dict[str, str]

    def url(self, tail: str = "") -> str:
        return org_url(self.id, tail)


AddMember = Callable[[str, User, OrgRole], Awaitable[None]]


@pytest.fixture
def add_member(db_conn: asyncpg.Connection) -> AddMember:
    """Write a membership straight to the database."""

    async def add(org_id: str, user: User, role: OrgRole) -> None:
        await db_conn.execute(
            "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, $3)",
            uuid.UUID(org_id),
            user.id,
            role.value,
        )

    return add


MakeTeam = Callable[..., Awaitable[Team]]


@pytest.fixture
def make_team(client: AsyncClient, login: Login, add_member: AddMember) -> MakeTeam:
    async def make(name: str = "Acme Corp", **body: Any) -> Team:
        owner, owner_headers = await login()
        response = await client.post(ORGS, json={"name": name, **body}, headers=owner_headers)
        assert response.status_code == 201, response.text
        created = response.json()
        admin, admin_headers = await login()
        member, member_headers = await login()
        await add_member(created["id"], admin, OrgRole.admin)
        await add_member(created["id"], member, OrgRole.member)
        return Team(
            created["id"],
            created,
            owner,
            owner_headers,
            admin,
            admin_headers,
            member,
            member_headers,
        )

    return make


MakeKey = Callable[..., Awaitable[str]]


@pytest.fixture
def make_key(client: AsyncClient) -> MakeKey:
    """Create an API key of `team` through the API; returns the key."""

    async def make(team: Team, scopes: list[str] | None = None, **body: Any) -> str:
        response = await client.post(
            team.url("/api-keys"),
            json={"name": "ci", "scopes": scopes or ["orders:read", "orders:write"], **body},
            headers=team.owner_headers,
        )
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key

    return make


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
