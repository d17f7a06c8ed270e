"""Small helpers shared by the auth and users tests."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
from httpx import AsyncClient, Response
from jose import jwt

from tests.conftest import DEFAULT_PASSWORD

API = "/api/v1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (the tests only read what the server wrote)."""
    return jwt.get_unverified_claims(token)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "request_id"}


def assert_token_pair(response: Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    return body


async def login(
    client: AsyncClient, email: str, password: str = DEFAULT_PASSWORD, **kwargs: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/auth/login", json={"email": email, "password": password}, **kwargs
    )
    return assert_token_pair(response)


async def age_rotations(db_conn: asyncpg.Connection, seconds: int = 60) -> None:
    """Move every rotation into the past, beyond the refresh grace window."""
    await db_conn.execute(
        "UPDATE refresh_tokens SET used_at = used_at - make_interval(secs => $1) "
        "WHERE used_at IS NOT NULL",
        float(seconds),
    )
