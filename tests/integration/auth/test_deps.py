"""The current-user dependency: who gets through, and every way a token is refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from jose import jwt
from redis.asyncio import Redis

from app.config import Settings
from app.core.database import uuid7
from app.core.routing import make_router
from app.core.security import Tokens
from app.features.auth.deps import AdminUser, CurrentUser, OptionalUser, revoked_session_key
from app.features.users.models import Role, User
from tests.conftest import TEST_JWT_SECRET, HeadersFactory, UserFactory


def add_probe_routes(app: FastAPI) -> None:
    router = make_router(prefix="/probe")

    @router.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"id": str(user.id), "role": user.role.value}

    @router.get("/admin")
    async def admin(user: AdminUser) -> dict[str, str]:
        return {"id": str(user.id)}

    @router.get("/maybe")
    async def maybe(user: OptionalUser) -> dict[str, str | None]:
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
        assert response.json() == {"id": str(user.id), "role": "user"}

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

    async def test_deactivated_user_is_refused(
        self, api: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user(is_active=False)
        assert_unauthorized(await api.get("/probe/me", headers=await auth_headers(user)))

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
        response = await api.get("/probe/admin", headers=await auth_headers(admin))
        assert response.status_code == 200
        assert response.json() == {"id": str(admin.id)}

    async def test_admin_route_is_403_for_a_user(
        self, api: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user()
        response = await api.get("/probe/admin", headers=await auth_headers(user))
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
