"""The email flows end to end: the API queues, the worker sends, the test reads the link."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import asyncpg
from httpx import AsyncClient

from app.dev import CapturedMail, SmtpSink
from tests.conftest import DEFAULT_PASSWORD, DrainJobs, HeadersFactory, UserFactory
from tests.integration.auth.helpers import API, assert_token_pair, bearer, login
from tests.problems import assert_problem

FRONTEND = "http://localhost:5173"
PASSWORD = "mail flow passphrase"
NEW_PASSWORD = "the next passphrase"


def token_from(mail: CapturedMail, page: str) -> str:
    links = [link for link in mail.links if link.startswith(f"{FRONTEND}/{page}?")]
    assert len(links) == 1, mail.links
    assert links[0] in mail.html
    return parse_qs(urlsplit(links[0]).query)["token"][0]


async def mails(drain_jobs: DrainJobs, smtp_sink: SmtpSink) -> list[CapturedMail]:
    await drain_jobs()
    return list(smtp_sink.messages)


class TestVerification:
    async def test_register_sends_a_link_that_verifies_the_email(
        self,
        client: AsyncClient,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        db_conn: asyncpg.Connection,
    ) -> None:
        response = await client.post(
            f"{API}/auth/register",
            json={"email": "New@Example.com", "password": PASSWORD, "full_name": "Nova"},
        )
        assert response.status_code == 201
        [mail] = await mails(drain_jobs, smtp_sink)
        assert mail.recipients == ["new@example.com"]
        assert mail.subject == "Verify your email"
        assert "Nova" in mail.text
        token = token_from(mail, "verify-email")
        stored = await db_conn.fetchval("SELECT token_hash FROM email_tokens")
        assert token not in stored
        verified = await client.post(f"{API}/auth/verify-email", json={"token": token})
        assert verified.status_code == 204
        pair = await login(client, "new@example.com", PASSWORD)
        me = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert me.json()["is_verified"] is True
        again = await client.post(f"{API}/auth/verify-email", json={"token": token})
        assert again.status_code == 204

    async def test_resend_sends_a_new_working_link(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
    ) -> None:
        user = await make_user(email="late@example.com", is_verified=False)
        response = await client.post(
            f"{API}/auth/verify-email/resend", headers=await auth_headers(user)
        )
        assert response.status_code == 202
        [mail] = await mails(drain_jobs, smtp_sink)
        assert (mail.recipients, mail.subject) == (["late@example.com"], "Verify your email")
        verified = await client.post(
            f"{API}/auth/verify-email", json={"token": token_from(mail, "verify-email")}
        )
        assert verified.status_code == 204


class TestPasswordReset:
    async def test_forgot_password_link_resets_once_and_a_notice_follows(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
    ) -> None:
        await make_user(email="lost@example.com", full_name="Lost Soul")
        session = await login(client, "lost@example.com")
        response = await client.post(
            f"{API}/auth/forgot-password", json={"email": "LOST@example.com"}
        )
        assert response.status_code == 202
        [mail] = await mails(drain_jobs, smtp_sink)
        assert (mail.recipients, mail.subject) == (["lost@example.com"], "Reset your password")
        token = token_from(mail, "reset-password")
        smtp_sink.clear()

        reset = await client.post(
            f"{API}/auth/reset-password", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert reset.status_code == 204
        [notice] = await mails(drain_jobs, smtp_sink)
        assert (notice.recipients, notice.subject) == (
            ["lost@example.com"],
            "Your password was changed",
        )
        assert token not in notice.text
        reused = await client.post(
            f"{API}/auth/reset-password", json={"token": token, "new_password": "yet another one"}
        )
        assert_problem(reused, 400, "INVALID_TOKEN")
        stale = await client.get(f"{API}/users/me", headers=bearer(session["access_token"]))
        assert_problem(stale, 401, "UNAUTHORIZED")
        await login(client, "lost@example.com", NEW_PASSWORD)

    async def test_forgot_password_for_an_unknown_email_sends_nothing(
        self,
        client: AsyncClient,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        db_conn: asyncpg.Connection,
    ) -> None:
        response = await client.post(
            f"{API}/auth/forgot-password", json={"email": "nobody@example.com"}
        )
        assert (response.status_code, response.content) == (202, b"")
        assert await mails(drain_jobs, smtp_sink) == []
        assert await db_conn.fetchval("SELECT count(*) FROM outbox") == 0

    async def test_password_change_sends_a_notice(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
    ) -> None:
        await make_user(email="changer@example.com")
        pair = await login(client, "changer@example.com")
        response = await client.post(
            f"{API}/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(pair["access_token"]),
        )
        assert_token_pair(response)
        [notice] = await mails(drain_jobs, smtp_sink)
        assert (notice.recipients, notice.subject) == (
            ["changer@example.com"],
            "Your password was changed",
        )

    async def test_a_failed_password_change_sends_nothing(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
    ) -> None:
        user = await make_user()
        response = await client.post(
            f"{API}/users/me/password",
            json={"current_password": "wrong-wrong", "new_password": NEW_PASSWORD},
            headers=await auth_headers(user),
        )
        assert_problem(response, 400, "INVALID_CREDENTIALS")
        assert await mails(drain_jobs, smtp_sink) == []


class TestLinksAtRest:
    async def test_queued_reset_and_verification_links_are_sealed_in_the_outbox(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        drain_jobs: DrainJobs,
        smtp_sink: SmtpSink,
        db_conn: asyncpg.Connection,
    ) -> None:
        """Until the worker sends them, a copy of the outbox holds no working link: the link
        is sealed (Fernet, a key derived from APP_JWT_SECRET); the sent mail has it."""
        await make_user(email="sealed@example.com")
        forgot = await client.post(
            f"{API}/auth/forgot-password", json={"email": "sealed@example.com"}
        )
        assert forgot.status_code == 202
        registered = await client.post(
            f"{API}/auth/register",
            json={"email": "fresh@example.com", "password": PASSWORD, "full_name": "F"},
        )
        assert registered.status_code == 201
        queued = [row["payload"] for row in await db_conn.fetch("SELECT payload::text FROM outbox")]
        assert len(queued) == 2
        for payload in queued:
            assert "token=" not in payload
            assert FRONTEND not in payload
            assert '"sealed"' in payload
        sent = await mails(drain_jobs, smtp_sink)
        by_subject = {mail.subject: mail for mail in sent}
        reset_token = token_from(by_subject["Reset your password"], "reset-password")
        verify_token = token_from(by_subject["Verify your email"], "verify-email")
        for payload in queued:
            assert reset_token not in payload
            assert verify_token not in payload
        # The mailed links work, and once sent nothing of them is left in the row.
        reset = await client.post(
            f"{API}/auth/reset-password", json={"token": reset_token, "new_password": NEW_PASSWORD}
        )
        assert reset.status_code == 204
        verified = await client.post(f"{API}/auth/verify-email", json={"token": verify_token})
        assert verified.status_code == 204
        after = [row["payload"] for row in await db_conn.fetch("SELECT payload FROM outbox")]
        sealed = [json.loads(payload).get("sealed") for payload in after]
        assert sealed.count({}) == 2  # the two links, scrubbed once sent
        assert all(value in (None, {}) for value in sealed)  # (the password notice had none)
