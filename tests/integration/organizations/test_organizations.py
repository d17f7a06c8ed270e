"""Organizations and their members: every route's happy path and each documented error."""

from __future__ import annotations

import re
import uuid

import asyncpg
from httpx import AsyncClient

from app.features.organizations.models import OrgRole
from app.features.organizations.service import derive_slug
from app.features.users.models import Role
from tests.integration.catalog import Login
from tests.integration.organizations.conftest import ORGS, AddMember, MakeTeam, org_url
from tests.problems import assert_problem

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{2,39}$")


class TestCreate:
    async def test_creator_becomes_owner_with_location(
        self, client: AsyncClient, login: Login, db_conn: asyncpg.Connection
    ) -> None:
        user, headers = await login()
        response = await client.post(
            ORGS, json={"name": "  Acme  ", "slug": "acme-inc"}, headers=headers
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"id", "name", "slug", "role", "created_at", "updated_at"}
        assert (body["name"], body["slug"], body["role"]) == ("Acme", "acme-inc", "owner")
        assert response.headers["location"] == org_url(body["id"])
        role = await db_conn.fetchval(
            "SELECT role FROM organization_members WHERE organization_id = $1 AND user_id = $2",
            uuid.UUID(body["id"]),
            user.id,
        )
        assert role == "owner"

    async def test_sent_slug_taken_is_409_and_writes_nothing(
        self, client: AsyncClient, login: Login, db_conn: asyncpg.Connection
    ) -> None:
        _, headers = await login()
        assert (
            await client.post(ORGS, json={"name": "A", "slug": "taken"}, headers=headers)
        ).status_code == 201
        response = await client.post(ORGS, json={"name": "B", "slug": "taken"}, headers=headers)
        assert_problem(response, 409, "SLUG_TAKEN")
        assert await db_conn.fetchval("SELECT count(*) FROM organizations") == 1
        assert await db_conn.fetchval("SELECT count(*) FROM organization_members") == 1

    async def test_a_nul_character_in_any_text_is_422_and_writes_nothing(
        self, client: AsyncClient, login: Login, db_conn: asyncpg.Connection
    ) -> None:
        """PostgreSQL cannot store U+0000 in text: refused at the edge, never a 500."""
        _, headers = await login()
        response = await client.post(ORGS, json={"name": "Acme\u0000"}, headers=headers)
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert [error["loc"] for error in body["errors"]] == [["body", "name"]]
        assert "NUL" in body["errors"][0]["msg"]
        profile = await client.patch(
            "/api/v1/users/me", json={"full_name": "Ada\u0000"}, headers=headers
        )
        assert_problem(profile, 422, "VALIDATION_ERROR")
        assert await db_conn.fetchval("SELECT count(*) FROM organizations") == 0

    async def test_derived_slug_follows_the_name(self, client: AsyncClient, login: Login) -> None:
        _, headers = await login()
        response = await client.post(ORGS, json={"name": "Café Ünïcode & Co."}, headers=headers)
        assert response.json()["slug"] == "cafe-unicode-co"

    async def test_derived_slug_taken_gets_a_suffix_not_a_409(
        self, client: AsyncClient, login: Login
    ) -> None:
        _, headers = await login()
        first = (await client.post(ORGS, json={"name": "Acme"}, headers=headers)).json()
        second = await client.post(ORGS, json={"name": "ACME!"}, headers=headers)
        assert second.status_code == 201
        assert first["slug"] == "acme"
        assert re.fullmatch(r"acme-[0-9a-f]{6}", second.json()["slug"])

    async def test_short_or_empty_derived_slug_gets_a_suffix(
        self, client: AsyncClient, login: Login
    ) -> None:
        _, headers = await login()
        short = (await client.post(ORGS, json={"name": "AB"}, headers=headers)).json()["slug"]
        empty = (await client.post(ORGS, json={"name": "!!!"}, headers=headers)).json()["slug"]
        assert re.fullmatch(r"ab-[0-9a-f]{6}", short)
        assert re.fullmatch(r"[0-9a-f]{6}", empty)
        long = (await client.post(ORGS, json={"name": "x" * 100}, headers=headers)).json()
        assert long["slug"] == "x" * 40
        again = (await client.post(ORGS, json={"name": "x" * 100}, headers=headers)).json()
        assert SLUG.fullmatch(again["slug"])
        assert len(again["slug"]) <= 40

    def test_derivation_rules(self) -> None:
        assert derive_slug("  --Hello,   World--  ") == "hello-world"
        assert derive_slug("Ærøskøbing Ltd") == "rskbing-ltd"  # no ASCII form: dropped
        assert derive_slug("a" * 45) == "a" * 40

    async def test_invalid_bodies_are_422(self, client: AsyncClient, login: Login) -> None:
        _, headers = await login()
        for body in (
            {"name": ""},
            {"name": "x" * 101},
            {"name": "ok", "slug": "-bad"},
            {"name": "ok", "slug": "ab"},
            {"name": "ok", "slug": "Upper"},
            {"name": "ok", "extra": 1},
        ):
            response = await client.post(ORGS, json=body, headers=headers)
            assert_problem(response, 422, "VALIDATION_ERROR")

    async def test_anonymous_is_401(self, client: AsyncClient) -> None:
        response = await client.post(ORGS, json={"name": "x"})
        assert_problem(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"


class TestRead:
    async def test_list_is_the_callers_organizations_by_name(
        self, client: AsyncClient, login: Login, add_member: AddMember
    ) -> None:
        _, headers = await login()
        _other, other_headers = await login()
        for name in ("Zeta", "alpha", "Mid"):
            await client.post(ORGS, json={"name": name}, headers=headers)
        foreign = (await client.post(ORGS, json={"name": "Other"}, headers=other_headers)).json()
        response = await client.get(ORGS, headers=headers, params={"page_size": 2})
        body = response.json()
        assert response.status_code == 200
        assert [item["name"] for item in body["items"]] == ["Mid", "Zeta"]  # C collation
        assert (body["total"], body["has_next"]) == (3, True)
        assert foreign["id"] not in [item["id"] for item in body["items"]]
        # A membership shows with its role.
        user, user_headers = await login()
        await add_member(foreign["id"], user, OrgRole.member)
        listed = (await client.get(ORGS, headers=user_headers)).json()["items"]
        assert [(item["id"], item["role"]) for item in listed] == [(foreign["id"], "member")]

    async def test_member_reads_it_non_member_and_platform_admin_get_404(
        self, client: AsyncClient, make_team: MakeTeam, login: Login
    ) -> None:
        team = await make_team()
        response = await client.get(team.url(), headers=team.member_headers)
        assert response.status_code == 200
        assert response.json()["role"] == "member"
        _, stranger = await login()
        _, platform_admin = await login(role=Role.admin)
        for headers in (stranger, platform_admin):
            assert_problem(await client.get(team.url(), headers=headers), 404, "NOT_FOUND")
        assert_problem(await client.get(org_url(uuid.uuid4()), headers=stranger), 404, "NOT_FOUND")
        assert_problem(
            await client.get(org_url("not-a-uuid"), headers=stranger), 422, "VALIDATION_ERROR"
        )


class TestUpdate:
    async def test_rename_keeps_the_slug(self, client: AsyncClient, make_team: MakeTeam) -> None:
        team = await make_team("Acme")
        response = await client.patch(
            team.url(), json={"name": "Acme Two"}, headers=team.admin_headers
        )
        assert response.status_code == 200, response.text
        assert (response.json()["name"], response.json()["slug"]) == ("Acme Two", "acme")
        assert response.json()["role"] == "admin"

    async def test_slug_change_and_taken_slug(
        self, client: AsyncClient, make_team: MakeTeam
    ) -> None:
        team = await make_team("Acme")
        await make_team("Other")
        ok = await client.patch(team.url(), json={"slug": "acme-new"}, headers=team.owner_headers)
        assert ok.json()["slug"] == "acme-new"
        taken = await client.patch(team.url(), json={"slug": "other"}, headers=team.owner_headers)
        assert_problem(taken, 409, "SLUG_TAKEN")

    async def test_member_is_403_and_null_is_422(
        self, client: AsyncClient, make_team: MakeTeam
    ) -> None:
        team = await make_team()
        assert_problem(
            await client.patch(team.url(), json={"name": "x"}, headers=team.member_headers),
            403,
            "FORBIDDEN",
        )
        assert_problem(
            await client.patch(team.url(), json={"name": None}, headers=team.owner_headers),
            422,
            "VALIDATION_ERROR",
        )


class TestDelete:
    async def test_owner_deletes_it_gone_for_everyone_slug_stays_taken(
        self, client: AsyncClient, make_team: MakeTeam, login: Login
    ) -> None:
        team = await make_team("Acme")
        assert_problem(
            await client.delete(team.url(), headers=team.admin_headers), 403, "FORBIDDEN"
        )
        response = await client.delete(team.url(), headers=team.owner_headers)
        assert response.status_code == 204
        for headers in (team.owner_headers, team.member_headers):
            assert_problem(await client.get(team.url(), headers=headers), 404, "NOT_FOUND")
        assert (await client.get(ORGS, headers=team.member_headers)).json()["total"] == 0
        _, headers = await login()
        again = await client.post(ORGS, json={"name": "x", "slug": "acme"}, headers=headers)
        assert_problem(again, 409, "SLUG_TAKEN")


class TestMembers:
    async def test_list_by_joined_at(self, client: AsyncClient, make_team: MakeTeam) -> None:
        team = await make_team()
        response = await client.get(team.url("/members"), headers=team.member_headers)
        assert response.status_code == 200
        items = response.json()["items"]
        assert [item["user_id"] for item in items] == [
            str(team.owner.id),
            str(team.admin.id),
            str(team.member.id),
        ]
        assert set(items[0]) == {"user_id", "email", "full_name", "role", "joined_at"}
        assert [item["role"] for item in items] == ["owner", "admin", "member"]

    async def test_admin_moves_member_to_admin_and_back(
        self, client: AsyncClient, make_team: MakeTeam
    ) -> None:
        team = await make_team()
        url = team.url(f"/members/{team.member.id}")
        up = await client.patch(url, json={"role": "admin"}, headers=team.admin_headers)
        assert (up.status_code, up.json()["role"]) == (200, "admin")
        down = await client.patch(url, json={"role": "member"}, headers=team.admin_headers)
        assert down.json()["role"] == "member"

    async def test_admin_cannot_touch_owners(
        self, client: AsyncClient, make_team: MakeTeam
    ) -> None:
        team = await make_team()
        promote = await client.patch(
            team.url(f"/members/{team.member.id}"),
            json={"role": "owner"},
            headers=team.admin_headers,
        )
        assert_problem(promote, 403, "FORBIDDEN")
        demote = await client.patch(
            team.url(f"/members/{team.owner.id}"),
            json={"role": "admin"},
            headers=team.admin_headers,
        )
        assert_problem(demote, 403, "FORBIDDEN")
        remove = await client.delete(
            team.url(f"/members/{team.owner.id}"), headers=team.admin_headers
        )
        assert_problem(remove, 403, "FORBIDDEN")

    async def test_last_owner_cannot_be_demoted_leave_or_be_removed(
        self, client: AsyncClient, make_team: MakeTeam
    ) -> None:
        team = await make_team()
        url = team.url(f"/members/{team.owner.id}")
        assert_problem(
            await client.patch(url, json={"role": "member"}, headers=team.owner_headers),
            409,
            "LAST_OWNER",
        )
        assert_problem(await client.delete(url, headers=team.owner_headers), 409, "LAST_OWNER")
        # With a second owner the first may step down.
        await client.patch(
            team.url(f"/members/{team.admin.id}"),
            json={"role": "owner"},
            headers=team.owner_headers,
        )
        assert (
            await client.patch(url, json={"role": "member"}, headers=team.owner_headers)
        ).status_code == 200

    async def test_inactive_owner_does_not_count(
        self, client: AsyncClient, make_team: MakeTeam, db_conn: asyncpg.Connection
    ) -> None:
        team = await make_team()
        await client.patch(
            team.url(f"/members/{team.admin.id}"),
            json={"role": "owner"},
            headers=team.owner_headers,
        )
        await db_conn.execute("UPDATE users SET is_active = false WHERE id = $1", team.admin.id)
        response = await client.patch(
            team.url(f"/members/{team.owner.id}"),
            json={"role": "member"},
            headers=team.owner_headers,
        )
        assert_problem(response, 409, "LAST_OWNER")

    async def test_member_leaves_and_loses_access_at_once(
        self, client: AsyncClient, make_team: MakeTeam
    ) -> None:
        team = await make_team()
        other = await client.delete(
            team.url(f"/members/{team.admin.id}"), headers=team.member_headers
        )
        assert_problem(other, 403, "FORBIDDEN")
        leave = await client.delete(
            team.url(f"/members/{team.member.id}"), headers=team.member_headers
        )
        assert leave.status_code == 204
        assert_problem(await client.get(team.url(), headers=team.member_headers), 404, "NOT_FOUND")

    async def test_admin_removes_member_unknown_member_is_404(
        self, client: AsyncClient, make_team: MakeTeam, login: Login
    ) -> None:
        team = await make_team()
        stranger, _ = await login()
        for method in ("patch", "delete"):
            kwargs = {"json": {"role": "member"}} if method == "patch" else {}
            response = await getattr(client, method)(
                team.url(f"/members/{stranger.id}"), headers=team.admin_headers, **kwargs
            )
            assert_problem(response, 404, "NOT_FOUND")
        removed = await client.delete(
            team.url(f"/members/{team.member.id}"), headers=team.admin_headers
        )
        assert removed.status_code == 204
        listed = (await client.get(team.url("/members"), headers=team.owner_headers)).json()
        assert str(team.member.id) not in [item["user_id"] for item in listed["items"]]

    async def test_invalid_role_is_422(self, client: AsyncClient, make_team: MakeTeam) -> None:
        team = await make_team()
        response = await client.patch(
            team.url(f"/members/{team.member.id}"),
            json={"role": "boss"},
            headers=team.owner_headers,
        )
        assert_problem(response, 422, "VALIDATION_ERROR")


class TestAccountClosing:
    async def test_last_owner_with_other_members_cannot_close_their_account(
        self, client: AsyncClient, make_team: MakeTeam, login: Login
    ) -> None:
        team = await make_team()
        response = await client.delete("/api/v1/users/me", headers=team.owner_headers)
        assert_problem(response, 409, "LAST_OWNER")
        _, admin_headers = await login(role=Role.admin)
        by_admin = await client.patch(
            f"/api/v1/users/{team.owner.id}", json={"is_active": False}, headers=admin_headers
        )
        assert_problem(by_admin, 409, "LAST_OWNER")
        # Another owner makes it possible.
        await client.patch(
            team.url(f"/members/{team.admin.id}"),
            json={"role": "owner"},
            headers=team.owner_headers,
        )
        assert (
            await client.delete("/api/v1/users/me", headers=team.owner_headers)
        ).status_code == 204

    async def test_sole_member_owner_may_close_their_account(
        self, client: AsyncClient, login: Login
    ) -> None:
        _, headers = await login()
        await client.post(ORGS, json={"name": "Solo"}, headers=headers)
        assert (await client.delete("/api/v1/users/me", headers=headers)).status_code == 204
