"""No password, hash or token ever reaches a log line (API and worker alike)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.dev import SmtpSink
from app.features.auth.schemas import LoginIn
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


async def test_a_console_traceback_shows_no_local_variables(
    make_client: Callable[..., Any], capfd: pytest.CaptureFixture[str]
) -> None:
    """`APP_LOG_FORMAT=console` (the development default): an exception in the middle of a
    login is logged with its traceback, and the password in the frames' locals stays out."""
    secret = "hunter2-console-pw"

    def add_route(app: FastAPI) -> None:
        @app.post("/test/login-crash")
        async def crash(body: LoginIn) -> None:
            password = body.password
            raise RuntimeError(f"boom after {len(password)} characters")

    client: AsyncClient = await make_client(setup=add_route, log_format="console")
    capfd.readouterr()
    response = await client.post(
        "/test/login-crash", json={"email": "c@example.com", "password": secret}
    )
    assert response.status_code == 500
    captured = capfd.readouterr()
    output = re.sub(r"\x1b\[[0-9;]*m", "", captured.err + captured.out)  # no colours
    assert "request.unhandled_error" in output
    assert "RuntimeError" in output  # the traceback is there...
    assert "boom after 18 characters" in output
    assert secret not in output  # ...without the locals that hold the password
