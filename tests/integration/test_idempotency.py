"""`app.core.idempotency` on a route of its own: any route is idempotent with one line.

The probe route renames its caller (a write in the request's transaction) and queues an
after-commit callback; with `"refuse": true` it does both and then raises a 409. The orders
route's own behaviour is in tests/integration/orders/test_idempotency.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI, Response
from httpx import AsyncClient
from pydantic import BaseModel
from sqlalchemy import text

from app.core.database import SessionDep, after_commit
from app.core.errors import ConflictError
from app.core.idempotency import idempotent
from app.core.routing import make_router
from app.features.users.deps import CurrentUser, get_current_user
from tests.conftest import HeadersFactory, UserFactory
from tests.problems import assert_problem

PROBE = "/probe/rename"


class Rename(BaseModel):
    full_name: str
    refuse: bool = False


def add_probe_route(app: FastAPI) -> None:
    router = make_router(prefix="/probe")
    app.state.probe_commits = []

    @router.post("/rename", status_code=201, dependencies=[idempotent(get_current_user)])
    async def rename(body: Rename, user: CurrentUser, session: SessionDep) -> Response:
        await session.execute(
            text("UPDATE users SET full_name = :name WHERE id = :id"),
            {"name": body.full_name, "id": user.id},
        )

        async def committed() -> None:
            app.state.probe_commits.append(body.full_name)

        after_commit(session, committed)
        during = getattr(app.state, "probe_during", None)
        if during is not None:
            await during(user.id)
        if body.refuse:
            raise ConflictError("refused on purpose", extra={"name": body.full_name})
        return Response(
            b'{"renamed":true}',
            status_code=201,
            media_type="application/json",
            headers={"Location": "/probe/somewhere"},
        )

    app.include_router(router)


@pytest.fixture
async def probe(make_client: Callable[..., Any]) -> tuple[AsyncClient, FastAPI]:
    apps: list[FastAPI] = []

    def setup(app: FastAPI) -> None:
        add_probe_route(app)
        apps.append(app)

    client: AsyncClient = await make_client(setup=setup)
    return client, apps[0]


async def name_of(db_conn: asyncpg.Connection, user: Any) -> str:
    name: str = await db_conn.fetchval("SELECT full_name FROM users WHERE id = $1", user.id)
    return name


class TestAnyRouteIsIdempotentWithOneLine:
    async def test_a_2xx_is_stored_with_the_work_and_replayed_without_running_again(
        self,
        probe: tuple[AsyncClient, FastAPI],
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        client, app = probe
        user = await make_user()
        headers = {**await auth_headers(user), "Idempotency-Key": "k1"}
        first = await client.post(PROBE, json={"full_name": "First"}, headers=headers)
        assert first.status_code == 201
        assert first.headers["location"] == "/probe/somewhere"
        assert "idempotent-replayed" not in first.headers
        await db_conn.execute("UPDATE users SET full_name = 'Reset' WHERE id = $1", user.id)

        again = await client.post(PROBE, json={"full_name": "First"}, headers=headers)
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers["location"] == "/probe/somewhere"
        assert again.headers["idempotent-replayed"] == "true"
        assert await name_of(db_conn, user) == "Reset"  # not run again
        assert app.state.probe_commits == ["First"]
        record = await db_conn.fetchrow(
            "SELECT response_status, location FROM idempotency_keys WHERE user_id = $1", user.id
        )
        assert tuple(record) == (201, "/probe/somewhere")

    async def test_a_4xx_undoes_the_routes_work_and_is_stored_and_replayed(
        self,
        probe: tuple[AsyncClient, FastAPI],
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        client, app = probe
        user = await make_user(full_name="Before")
        headers = {**await auth_headers(user), "Idempotency-Key": "k2"}
        body = {"full_name": "Refused", "refuse": True}
        first = await client.post(PROBE, json=body, headers=headers)
        problem = assert_problem(first, 409, "CONFLICT")
        assert problem["name"] == "Refused"
        assert "idempotent-replayed" not in first.headers
        # The route's UPDATE and its after-commit work were discarded; the outcome was kept.
        assert await name_of(db_conn, user) == "Before"
        assert app.state.probe_commits == []
        status = await db_conn.fetchval(
            "SELECT response_status FROM idempotency_keys WHERE user_id = $1", user.id
        )
        assert status == 409

        again = await client.post(PROBE, json=body, headers=headers)
        assert again.status_code == 409
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()

    async def test_without_a_key_the_route_runs_every_time(
        self,
        probe: tuple[AsyncClient, FastAPI],
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        client, app = probe
        user = await make_user()
        headers = await auth_headers(user)
        for _ in range(2):
            response = await client.post(PROBE, json={"full_name": "Again"}, headers=headers)
            assert response.status_code == 201
        assert app.state.probe_commits == ["Again", "Again"]
        assert await db_conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0

    async def test_another_body_is_422_and_an_invalid_one_is_the_routes_own_422(
        self,
        probe: tuple[AsyncClient, FastAPI],
        make_user: UserFactory,
        auth_headers: HeadersFactory,
    ) -> None:
        client, _ = probe
        user = await make_user()
        headers = {**await auth_headers(user), "Idempotency-Key": "k3"}
        assert (await client.post(PROBE, json={"full_name": "A"}, headers=headers)).is_success
        other = await client.post(PROBE, json={"full_name": "B"}, headers=headers)
        assert_problem(other, 422, "IDEMPOTENCY_KEY_REUSED")
        invalid = await client.post(PROBE, json={"full_name": 5}, headers=headers)
        assert_problem(invalid, 422, "VALIDATION_ERROR")

    async def test_no_token_is_401_and_nothing_is_stored(
        self, probe: tuple[AsyncClient, FastAPI], db_conn: asyncpg.Connection
    ) -> None:
        client, _ = probe
        response = await client.post(
            PROBE, json={"full_name": "X"}, headers={"Idempotency-Key": "k4"}
        )
        assert_problem(response, 401, "UNAUTHORIZED")
        assert await db_conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0


class TestARaceLostBetweenLookupAndStore:
    async def test_the_first_committed_outcome_wins_and_this_work_is_discarded(
        self,
        probe: tuple[AsyncClient, FastAPI],
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        """Another request with the key commits its outcome after this one looked the key up
        (the lookup's snapshot predates the lock): this one's INSERT of its outcome conflicts,
        its work is discarded and the first outcome is answered."""
        client, app = probe
        user = await make_user(full_name="Before")

        async def first_request_commits(user_id: object) -> None:
            await db_conn.execute(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, "
                "response_body, response_content_type, location, expires_at) VALUES ($1, 'race', "
                "$2, 201, '{\"first\":true}', 'application/json', '/first', "
                "now() + interval '1 hour')",
                user_id,
                await _fingerprint_of(client, headers, body),
            )

        headers = {**await auth_headers(user), "Idempotency-Key": "race"}
        body = {"full_name": "Second"}
        app.state.probe_during = first_request_commits
        response = await client.post(PROBE, json=body, headers=headers)
        assert response.status_code == 201
        assert response.json() == {"first": True}
        assert response.headers["location"] == "/first"
        assert response.headers["idempotent-replayed"] == "true"
        assert await name_of(db_conn, user) == "Before"  # this request's UPDATE was discarded
        assert app.state.probe_commits == []


async def _fingerprint_of(client: AsyncClient, headers: dict[str, str], body: Any) -> str:
    """The fingerprint the route computes for this body (method, route, canonical JSON)."""
    import hashlib
    import json

    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"POST /probe/rename\n" + canonical).hexdigest()
