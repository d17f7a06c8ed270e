"""Invitations: emailed through the outbox, single-use hashed tokens, 7 days, replacement, and
acceptance by the verified owner of the invited address only (checked in API.md's order)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import asyncpg
from httpx import AsyncClient

from app.dev import SmtpSink
from tests.conftest import DrainJobs
from tests.integration.catalog import Login
from tests.integration.organizations.conftest import MakeTeam, Team
from tests.problems import assert_problem

ACCEPT = "/api/v1/invitations/accept"


async def invite(
    client: AsyncClient, team: Team, email: str, role: str = "member"
) -> dict[str, object]:
    response = await client.post(
        team.url("/invitations"),
        json={"email": email, "role": role},
        headers=team.owner_headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def emailed_token(drain_jobs: DrainJobs, smtp_sink: SmtpSink, to: str) -> str:
    await drain_jobs()
    mails = [mail for mail in smtp_sink.messages if to in mail.recipients]
    assert mails, "no invitation email"
    link = mails[-1].links[0]
    return parse_qs(urlparse(link).query)["token"][0]


class TestInvite:
    async def test_invitation_is_stored_hashed_and_emailed(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team("Acme Corp")
        body = await invite(client, team, "  New.Person@Example.COM ", "admin")
        assert set(body) == {
            "id",
            "organization_id",
            "email",
            "role",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
        }
        assert (body["email"], body["role"], body["status"]) == (
            "new.person@example.com",
            "admin",
            "pending",
        )
        assert body["invited_by"] == str(team.owner.id)
        await drain_jobs()
        [mail] = smtp_sink.messages
        assert mail.recipients == ["new.person@example.com"]
        assert mail.subject == "You're invited to join Acme Corp"
        assert team.owner.full_name in mail.text
        assert "admin" in mail.text
        link = mail.links[0]
        assert link.startswith("http://localhost:5173/accept-invitation?token=")
        token = parse_qs(urlparse(link).query)["token"][0]
        assert link in mail.html
        stored = await db_conn.fetchval(
            "SELECT token_hash FROM organization_invitations WHERE id = $1",
            uuid.UUID(str(body["id"])),
        )
        assert stored == hashlib.sha256(token.encode()).hexdigest()
        # The payload in the outbox lost its token once sent.
        payload = await db_conn.fetchval("SELECT payload::text FROM outbox")
        assert token not in payload

    async def test_existing_member_is_409_and_nothing_is_queued(
        self, client: AsyncClient, make_team: MakeTeam, db_conn: asyncpg.Connection
    ) -> None:
        team = await make_team()
        response = await client.post(
            team.url("/invitations"),
            json={"email": team.member.email.upper(), "role": "member"},
            headers=team.admin_headers,
        )
        assert_problem(response, 409, "ALREADY_MEMBER")
        assert await db_conn.fetchval("SELECT count(*) FROM outbox") == 0

    async def test_owner_role_only_by_an_owner(
        self, client: AsyncClient, make_team: MakeTeam
    ) -> None:
        team = await make_team()
        by_admin = await client.post(
            team.url("/invitations"),
            json={"email": "x@example.com", "role": "owner"},
            headers=team.admin_headers,
        )
        assert_problem(by_admin, 403, "FORBIDDEN")
        by_owner = await client.post(
            team.url("/invitations"),
            json={"email": "x@example.com", "role": "owner"},
            headers=team.owner_headers,
        )
        assert by_owner.status_code == 201

    async def test_member_403_bad_body_422(self, client: AsyncClient, make_team: MakeTeam) -> None:
        team = await make_team()
        assert_problem(
            await client.post(
                team.url("/invitations"),
                json={"email": "x@example.com", "role": "member"},
                headers=team.member_headers,
            ),
            403,
            "FORBIDDEN",
        )
        for body in ({"email": "nope", "role": "member"}, {"email": "a@example.com", "role": "x"}):
            response = await client.post(
                team.url("/invitations"), json=body, headers=team.owner_headers
            )
            assert_problem(response, 422, "VALIDATION_ERROR")

    async def test_new_invitation_replaces_the_pending_one(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        login: Login,
    ) -> None:
        team = await make_team()
        first = await invite(client, team, "joiner@example.com")
        old_token = await emailed_token(drain_jobs, smtp_sink, "joiner@example.com")
        second = await invite(client, team, "JOINER@example.com", "admin")
        new_token = await emailed_token(drain_jobs, smtp_sink, "joiner@example.com")
        assert old_token != new_token
        listed = (await client.get(team.url("/invitations"), headers=team.owner_headers)).json()[
            "items"
        ]
        assert [(item["id"], item["status"]) for item in listed] == [
            (second["id"], "pending"),
            (first["id"], "revoked"),
        ]
        _, headers = await login(email="joiner@example.com")
        assert_problem(
            await client.post(ACCEPT, json={"token": old_token}, headers=headers),
            400,
            "INVALID_TOKEN",
        )
        accepted = await client.post(ACCEPT, json={"token": new_token}, headers=headers)
        assert (accepted.status_code, accepted.json()["role"]) == (200, "admin")


class TestListAndRevoke:
    async def test_status_filter_and_expired_is_computed(
        self, client: AsyncClient, make_team: MakeTeam, db_conn: asyncpg.Connection
    ) -> None:
        team = await make_team()
        old = await invite(client, team, "old@example.com")
        fresh = await invite(client, team, "fresh@example.com")
        await db_conn.execute(
            "UPDATE organization_invitations SET expires_at = now() - interval '1 second' "
            "WHERE id = $1",
            uuid.UUID(str(old["id"])),
        )

        async def ids(status: str | None) -> list[str]:
            params = {"status": status} if status else {}
            response = await client.get(
                team.url("/invitations"), params=params, headers=team.admin_headers
            )
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()["items"]]

        assert await ids(None) == [fresh["id"], old["id"]]
        assert await ids("pending") == [fresh["id"]]
        assert await ids("expired") == [old["id"]]
        assert await ids("accepted") == []
        assert_problem(
            await client.get(
                team.url("/invitations"), params={"status": "nope"}, headers=team.admin_headers
            ),
            422,
            "VALIDATION_ERROR",
        )

    async def test_revoke_stops_the_link_twice_is_204_unknown_is_404(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        login: Login,
    ) -> None:
        team = await make_team()
        body = await invite(client, team, "gone@example.com")
        token = await emailed_token(drain_jobs, smtp_sink, "gone@example.com")
        url = team.url(f"/invitations/{body['id']}")
        assert (await client.delete(url, headers=team.admin_headers)).status_code == 204
        assert (await client.delete(url, headers=team.admin_headers)).status_code == 204
        _, headers = await login(email="gone@example.com")
        assert_problem(
            await client.post(ACCEPT, json={"token": token}, headers=headers), 400, "INVALID_TOKEN"
        )
        assert_problem(
            await client.delete(
                team.url(f"/invitations/{uuid.uuid4()}"), headers=team.admin_headers
            ),
            404,
            "NOT_FOUND",
        )


class TestAccept:
    async def test_accept_joins_with_the_role_then_token_is_used(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        login: Login,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team("Acme")
        body = await invite(client, team, "new@example.com", "admin")
        token = await emailed_token(drain_jobs, smtp_sink, "new@example.com")
        user, headers = await login(email="NEW@example.com")
        response = await client.post(ACCEPT, json={"token": token}, headers=headers)
        assert response.status_code == 200, response.text
        assert (response.json()["id"], response.json()["role"]) == (team.id, "admin")
        assert (await client.get(team.url(), headers=headers)).status_code == 200
        row = await db_conn.fetchrow(
            "SELECT status, accepted_by FROM organization_invitations WHERE id = $1",
            uuid.UUID(str(body["id"])),
        )
        assert (row["status"], row["accepted_by"]) == ("accepted", user.id)
        again = await client.post(ACCEPT, json={"token": token}, headers=headers)
        assert_problem(again, 400, "INVALID_TOKEN")

    async def test_expired_token_is_400(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        login: Login,
        db_conn: asyncpg.Connection,
    ) -> None:
        team = await make_team()
        await invite(client, team, "late@example.com")
        token = await emailed_token(drain_jobs, smtp_sink, "late@example.com")
        expires = await db_conn.fetchval(
            "SELECT expires_at - created_at FROM organization_invitations"
        )
        assert abs(expires - timedelta(days=7)) < timedelta(seconds=1)
        await db_conn.execute(
            "UPDATE organization_invitations SET expires_at = now() - interval '1 second'"
        )
        _, headers = await login(email="late@example.com")
        assert_problem(
            await client.post(ACCEPT, json={"token": token}, headers=headers), 400, "INVALID_TOKEN"
        )

    async def test_checks_in_order_token_then_email_then_verification(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        login: Login,
    ) -> None:
        team = await make_team()
        await invite(client, team, "invitee@example.com")
        token = await emailed_token(drain_jobs, smtp_sink, "invitee@example.com")
        _, unverified_other = await login(email="other@example.com", is_verified=False)
        # Unknown token beats everything.
        assert_problem(
            await client.post(ACCEPT, json={"token": "nope"}, headers=unverified_other),
            400,
            "INVALID_TOKEN",
        )
        # Wrong address beats unverified.
        assert_problem(
            await client.post(ACCEPT, json={"token": token}, headers=unverified_other),
            403,
            "INVITATION_EMAIL_MISMATCH",
        )
        _, unverified = await login(email="invitee@example.com", is_verified=False)
        assert_problem(
            await client.post(ACCEPT, json={"token": token}, headers=unverified),
            403,
            "EMAIL_NOT_VERIFIED",
        )
        # Nothing was used up by the refusals.
        assert (await client.get(team.url("/invitations"), headers=team.owner_headers)).json()[
            "items"
        ][0]["status"] == "pending"

    async def test_deleted_organization_voids_its_invitations(
        self,
        client: AsyncClient,
        make_team: MakeTeam,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        login: Login,
    ) -> None:
        team = await make_team()
        await invite(client, team, "late@example.com")
        token = await emailed_token(drain_jobs, smtp_sink, "late@example.com")
        await client.delete(team.url(), headers=team.owner_headers)
        _, headers = await login(email="late@example.com")
        assert_problem(
            await client.post(ACCEPT, json={"token": token}, headers=headers), 400, "INVALID_TOKEN"
        )

    async def test_anonymous_401_and_empty_token_422(
        self, client: AsyncClient, login: Login
    ) -> None:
        assert_problem(await client.post(ACCEPT, json={"token": "x"}), 401, "UNAUTHORIZED")
        _, headers = await login()
        assert_problem(
            await client.post(ACCEPT, json={"token": ""}, headers=headers), 422, "VALIDATION_ERROR"
        )
