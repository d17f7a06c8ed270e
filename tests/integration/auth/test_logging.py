"""No password, hash or token ever reaches a log line (API and worker alike)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from app.dev import SmtpSink
from tests.conftest import DrainJobs
from tests.integration.auth.helpers import API, bearer, login

PASSWORD = "log-me-never passphrase"


async def test_register_login_and_refresh_log_no_secret(
    make_client: Callable[..., Any],
    db_conn: asyncpg.Connection,
    drain_jobs: DrainJobs,
    smtp_sink: SmtpSink,
    capfd: pytest.CaptureFixture[str],
) -> None:
    client: AsyncClient = await make_client(log_format="json", log_level="DEBUG")
    capfd.readouterr()
    registered = await client.post(
        f"{API}/auth/register",
        json={"email": "quiet@example.com", "password": PASSWORD, "full_name": "Q"},
    )
    assert registered.status_code == 201
    await drain_jobs()  # the worker renders and sends the verification email
    [mail] = smtp_sink.messages
    [link] = [link for link in mail.links if "verify-email?token=" in link]
    emailed_token = link.split("token=", 1)[1]
    wrong = await client.post(
        f"{API}/auth/login", json={"email": "quiet@example.com", "password": PASSWORD + "x"}
    )
    assert wrong.status_code == 401
    pair = await login(client, "quiet@example.com", PASSWORD)
    refreshed = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 200
    me = await client.get(f"{API}/users/me", headers=bearer(refreshed.json()["access_token"]))
    assert me.status_code == 200

    captured = capfd.readouterr()
    # `mail.log` is aiosmtpd, the test's SMTP server: the far side of the wire, which at DEBUG
    # dumps what it receives (the mail itself). Everything of ours is checked.
    logs = "\n".join(
        line
        for line in (captured.err + captured.out).splitlines()
        if '"logger": "mail.log"' not in line
    )
    assert '"event": "auth.registered"' in logs
    assert '"event": "auth.logged_in"' in logs
    assert '"event": "http.request"' in logs
    password_hash = await db_conn.fetchval(
        "SELECT password_hash FROM users WHERE email = 'quiet@example.com'"
    )
    secrets = [
        PASSWORD,
        password_hash,
        password_hash.split("$")[-1],  # the digest alone
        pair["access_token"],
        pair["refresh_token"],
        refreshed.json()["access_token"],
        refreshed.json()["refresh_token"],
        emailed_token,
    ]
    for secret in secrets:
        assert secret not in logs
    for secret in secrets:
        assert secret not in registered.text + me.text
