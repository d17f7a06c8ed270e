"""Owners under real concurrency (a uvicorn server, simultaneous requests on their own database
connections), and key revocation seen by every API process at once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from app.features.organizations.models import OrgRole
from app.main import create_app
from tests.conftest import SettingsFactory
from tests.in_loop import serving
from tests.integration.catalog import Login
from tests.integration.organizations.conftest import ORGS, AddMember, MakeKey, MakeTeam, bearer
from tests.problems import assert_problem

pytestmark = pytest.mark.slow

ROUNDS = 4


@pytest.fixture
async def live_url(make_settings: SettingsFactory) -> AsyncIterator[str]:
    app = create_app(make_settings(db_pool_size=10, db_max_overflow=10))
    async with serving(app, lifespan="on") as port:
        yield f"http://127.0.0.1:{port}"


async def _owners(db_conn: asyncpg.Connection, org_id: str) -> int:
    count: int = await db_conn.fetchval(
        "SELECT count(*) FROM organization_members WHERE organization_id = $1 AND role = 'owner'",
        uuid.UUID(org_id),
    )
    return count


async def test_two_owners_demoting_each_other_at_once_one_fails(
    live_url: str, login: Login, add_member: AddMember, db_conn: asyncpg.Connection
) -> None:
    outcomes: Counter[int] = Counter()
    for _ in range(ROUNDS):
        first, first_headers = await login()
        second, second_headers = await login()
        async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
            created = await http.post(ORGS, json={"name": "Race"}, headers=first_headers)
            org_id = created.json()["id"]
            await add_member(org_id, second, OrgRole.owner)
            member, _ = await login()
            await add_member(org_id, member, OrgRole.member)

            async def demote(
                target: Any, headers: dict[str, str], org_id: str = org_id
            ) -> httpx.Response:
                return await http.patch(
                    f"{ORGS}/{org_id}/members/{target.id}",
                    json={"role": "member"},
                    headers=headers,
                )

            responses = await asyncio.gather(
                demote(second, first_headers), demote(first, second_headers)
            )
        statuses = sorted(response.status_code for response in responses)
        # The loser either raced into the owner lock (409 LAST_OWNER) or, when the winner had
        # already committed before its membership was read, is a member by then (403).
        assert statuses in ([200, 403], [200, 409]), [response.text for response in responses]
        loser = next(response for response in responses if response.status_code != 200)
        assert loser.json()["code"] in {"LAST_OWNER", "FORBIDDEN"}
        assert await _owners(db_conn, org_id) == 1
        outcomes.update(statuses)
    assert outcomes[200] == ROUNDS


async def test_two_owners_leaving_at_once_one_stays(
    live_url: str, login: Login, add_member: AddMember, db_conn: asyncpg.Connection
) -> None:
    for _ in range(ROUNDS):
        first, first_headers = await login()
        second, second_headers = await login()
        async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
            org_id = (await http.post(ORGS, json={"name": "Race"}, headers=first_headers)).json()[
                "id"
            ]
            await add_member(org_id, second, OrgRole.owner)
            responses = await asyncio.gather(
                http.delete(f"{ORGS}/{org_id}/members/{first.id}", headers=first_headers),
                http.delete(f"{ORGS}/{org_id}/members/{second.id}", headers=second_headers),
            )
        assert sorted(response.status_code for response in responses) == [204, 409]
        assert await _owners(db_conn, org_id) == 1


async def test_deleted_key_is_refused_at_once_by_every_app_process(
    make_client: Any, make_team: MakeTeam, make_key: MakeKey, db_conn: asyncpg.Connection
) -> None:
    """Two app instances sharing one Redis and database, as two `saas serve` workers do."""
    team = await make_team()
    key = await make_key(team)
    key_id = await db_conn.fetchval("SELECT id FROM api_keys")
    first = await make_client()
    second = await make_client()
    # Both processes have the key's lookup cached and working.
    for http in (first, second):
        assert_problem(
            await http.get("/api/v1/users/me", headers=bearer(key)), 403, "INSUFFICIENT_SCOPE"
        )
    deleted = await first.delete(f"{ORGS}/{team.id}/api-keys/{key_id}", headers=team.owner_headers)
    assert deleted.status_code == 204
    for http in (second, first):
        assert_problem(await http.get("/api/v1/users/me", headers=bearer(key)), 401, "UNAUTHORIZED")


async def test_the_same_address_invited_twice_at_once_leaves_one_pending_invitation(
    live_url: str, make_team: MakeTeam, db_conn: asyncpg.Connection
) -> None:
    """Two managers invite one address at the same moment: both are answered 201 (the later
    invitation replaces the earlier, as a re-invitation does), never a 500 from the index that
    allows one pending invitation per address."""
    team = await make_team()
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as http:
        for round_ in range(ROUNDS):
            email = f"racer{round_}@example.com"
            responses = await asyncio.gather(
                http.post(
                    f"{ORGS}/{team.id}/invitations",
                    json={"email": email, "role": "member"},
                    headers=team.owner_headers,
                ),
                http.post(
                    f"{ORGS}/{team.id}/invitations",
                    json={"email": email, "role": "admin"},
                    headers=team.admin_headers,
                ),
            )
            assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
            statuses = await db_conn.fetch(
                "SELECT status, count(*) AS n FROM organization_invitations "
                "WHERE organization_id = $1 AND email = $2 GROUP BY status",
                uuid.UUID(team.id),
                email,
            )
            assert {row["status"]: row["n"] for row in statuses} == {"pending": 1, "revoked": 1}
