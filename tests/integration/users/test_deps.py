"""The current-user dependency: who gets through, and every way a token is refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from jose import jwt
from redis.asyncio import Redis

from app.config import Settings
from app.core.database import uuid7
from app.core.routing import make_router
from app.core.security import Tokens, revoked_session_key
from app.features.users.deps import (
    AdminUser,
    AdminViewer,
    CurrentUser,
    OptionalViewer,
    Viewer,
)
from app.features.users.models import Role, User
from app.features.users.queries import UserView
from tests.conftest import TEST_JWT_SECRET, HeadersFactory, UserFactory


def add_probe_routes(app: FastAPI) -> None:
    router = make_router(prefix="/probe")

    @router.get("/me")
    async def me(user: Viewer) -> dict[str, str]:
        return {"id": str(user.id), "role": user.role.value, "type": type(user).__name__}

    @router.post("/me")
    async def write_me(user: CurrentUser) -> dict[str, str]:
        # A write route's caller is tracked by its session: a change is committed.
        user.full_name = "Changed By Probe"
        return {"id": str(user.id), "role": user.role.value, "type": type(user).__name__}

    @router.get("/admin")
    async def admin(user: AdminViewer) -> dict[str, str]:
        return {"id": str(user.id)}

    @router.post("/admin")
    async def write_admin(user: AdminUser) -> dict[str, str]:
        return {"id": str(user.id)}

    @router.get("/maybe")
    async def maybe(user: OptionalViewer) -> dict[str, str | None]:
        return {"id": str(user.id) if user else None}

    app.include_router(router)


@pytest.fixture
async def api(make_client: Callable[..., Any]) -> AsyncClient:
    client: AsyncClient = await make_client(setup=add_probe_routes)
    return client


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "UNAUTHORIZED"


def claims_for(user: User, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user.id),
        "role": user.role.value,
        "sid": str(uuid7()),
        "ver": user.token_version,
        "type": "access",
        "jti": "j1",
        "iat": now,
        "exp": now + 600,
        "iss": "saas-backend",
        "aud": "saas-backend-api",
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestCurrentUser:
    async def test_valid_token_reaches_the_route_as_its_user(
        self, api: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user()
        response = await api.get("/probe/me", headers=await auth_headers(user))
        assert response.status_code == 200
        assert response.json() == {"id": str(user.id), "role": "user", "type": "UserView"}

    async def test_a_write_route_gets_the_account_tracked_by_its_session(
        self,
        api: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user = await make_user()
        response = await api.post("/probe/me", headers=await auth_headers(user))
        assert response.status_code == 200
        assert response.json() == {"id": str(user.id), "role": "user", "type": "User"}
        name = await db_conn.fetchval("SELECT full_name FROM users WHERE id = $1", user.id)
        assert name == "Changed By Probe"

    async def test_a_read_routes_view_of_the_account_cannot_be_changed(self) -> None:
        view = UserView(
            id=uuid7(),
            email="a@example.com",
            full_name="A",
            role=Role.user,
            is_active=True,
            is_verified=False,
            token_version=0,
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
        with pytest.raises(FrozenInstanceError):
            view.full_name = "B"  # type: ignore[misc]

    async def test_missing_token_is_401_with_bearer_challenge(self, api: AsyncClient) -> None:
        assert_unauthorized(await api.get("/probe/me"))

    @pytest.mark.parametrize(
        "changes",
        [
            pytest.param({"exp": int(time.time()) - 10}, id="expired"),
            pytest.param({"exp": None}, id="no-exp"),
            pytest.param({"aud": None}, id="no-aud"),
            pytest.param({"iss": None}, id="no-iss"),
            pytest.param({"iat": None}, id="no-iat"),
            pytest.param({"jti": None}, id="no-jti"),
            pytest.param({"aud": "someone-else"}, id="wrong-aud"),
            pytest.param({"iss": "someone-else"}, id="wrong-iss"),
            pytest.param({"type": "refresh"}, id="refresh-as-access"),
            pytest.param({"sub": "not-a-uuid"}, id="bad-sub"),
        ],
    )
    async def test_forged_or_incomplete_token_is_refused(
        self, api: AsyncClient, make_user: UserFactory, changes: dict[str, Any]
    ) -> None:
        user = await make_user()
        token = jwt.encode(claims_for(user, **changes), TEST_JWT_SECRET, algorithm="HS256")
        assert_unauthorized(await api.get("/probe/me", headers=bearer(token)))

    async def test_token_signed_with_another_secret_is_refused(
        self, api: AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()
        token = jwt.encode(claims_for(user), "another-secret-" + "z" * 40, algorithm="HS256")
        assert_unauthorized(await api.get("/probe/me", headers=bearer(token)))

    async def test_unsigned_alg_none_token_is_refused(
        self, api: AsyncClient, make_user: UserFactory
    ) -> None:
        user = await make_user()

        def part(value: dict[str, Any]) -> str:
            raw = json.dumps(value).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims_for(user))}."
        assert_unauthorized(await api.get("/probe/me", headers=bearer(token)))

    async def test_revoked_session_is_refused_but_another_session_goes_on(
        self,
        api: AsyncClient,
        make_user: UserFactory,
        settings: Settings,
        redis_client: Redis,
    ) -> None:
        user = await make_user()
        tokens = Tokens(settings)
        ended, ended_claims = tokens.encode(
            type="access", subject=user.id, session_id=uuid7(), version=0, role="user"
        )
        other, _ = tokens.encode(
            type="access", subject=user.id, session_id=uuid7(), version=0, role="user"
        )
        await redis_client.set(revoked_session_key(ended_claims.session_id), "1", ex=60)
        assert_unauthorized(await api.get("/probe/me", headers=bearer(ended)))
        assert (await api.get("/probe/me", headers=bearer(other))).status_code == 200

    async def test_token_of_an_older_version_is_refused(
        self, api: AsyncClient, make_user: UserFactory, settings: Settings
    ) -> None:
        user = await make_user()
        token, _ = Tokens(settings).encode(
            type="access", subject=user.id, session_id=uuid7(), version=-1, role="user"
        )
        assert_unauthorized(await api.get("/probe/me", headers=bearer(token)))
        assert_unauthorized(await api.post("/probe/me", headers=bearer(token)))

    async def test_deactivated_user_is_refused(
        self, api: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user(is_active=False)
        headers = await auth_headers(user)
        assert_unauthorized(await api.get("/probe/me", headers=headers))
        assert_unauthorized(await api.post("/probe/me", headers=headers))

    async def test_unknown_user_is_refused(
        self, api: AsyncClient, make_user: UserFactory, settings: Settings
    ) -> None:
        user = await make_user()
        token, _ = Tokens(settings).encode(
            type="access", subject=uuid7(), session_id=uuid7(), version=user.token_version
        )
        assert_unauthorized(await api.get("/probe/me", headers=bearer(token)))


class TestRoles:
    async def test_admin_route_lets_an_admin_through(
        self, api: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        headers = await auth_headers(admin)
        for response in (
            await api.get("/probe/admin", headers=headers),
            await api.post("/probe/admin", headers=headers),
        ):
            assert response.status_code == 200
            assert response.json() == {"id": str(admin.id)}

    async def test_admin_route_is_403_for_a_user(
        self, api: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user()
        headers = await auth_headers(user)
        for response in (
            await api.get("/probe/admin", headers=headers),
            await api.post("/probe/admin", headers=headers),
        ):
            assert response.status_code == 403
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "FORBIDDEN"

    async def test_optional_user_is_none_without_or_with_a_bad_token(
        self, api: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user()
        assert (await api.get("/probe/maybe")).json() == {"id": None}
        assert (await api.get("/probe/maybe", headers=bearer("garbage"))).json() == {"id": None}
        known = await api.get("/probe/maybe", headers=await auth_headers(user))
        assert known.json() == {"id": str(user.id)}
