"""`AppRouter`: a path outside an included router's routes is refused before they are tried."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from httpx import ASGITransport, AsyncClient
from starlette.routing import Match

from app.core.routing import AppRouter, include, make_router


def _scope(path: str) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}


def _app() -> tuple[FastAPI, AppRouter, AppRouter, AppRouter]:
    app = FastAPI()
    prefixed = make_router(prefix="/things")
    spelled_out = make_router()  # full paths in the decorators, like the organizations'
    anywhere = make_router()  # no start in common but "/"

    @prefixed.get("/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"thing": thing_id}

    @spelled_out.get("/teams/{team_id}")
    async def team(team_id: str) -> dict[str, str]:
        return {"team": team_id}

    @spelled_out.get("/teams/{team_id}/members")
    async def members(team_id: str) -> dict[str, str]:
        return {"members": team_id}

    @anywhere.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @anywhere.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    include(app, prefixed, prefix="/api")
    include(app, spelled_out, prefix="/api")
    include(app, anywhere)
    return app, prefixed, spelled_out, anywhere


def test_include_records_where_each_router_lives() -> None:
    _, prefixed, spelled_out, anywhere = _app()
    assert prefixed.mounted_at == ("/api/things/",)
    assert spelled_out.mounted_at == ("/api/teams/",)
    assert anywhere.mounted_at == ()


def test_a_path_elsewhere_is_refused_without_trying_a_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, prefixed, spelled_out, _ = _app()

    def tried(*_args: Any) -> Any:
        raise AssertionError("a route was tried")

    monkeypatch.setattr(APIRoute, "matches", tried)
    assert prefixed.matches(_scope("/api/teams/1")) == (Match.NONE, {})
    assert spelled_out.matches(_scope("/api/things/1")) == (Match.NONE, {})


async def test_every_route_still_answers_and_an_unknown_path_is_404() -> None:
    app, *_ = _app()
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/api/things/7")).json() == {"thing": "7"}
        assert (await client.get("/api/teams/3/members")).json() == {"members": "3"}
        assert (await client.get("/api/teams/3")).json() == {"team": "3"}
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/api/nothing")).status_code == 404


def test_including_twice_does_not_grow_the_prefixes() -> None:
    app = FastAPI()
    router = make_router(prefix="/things")

    @router.get("")
    async def things() -> list[str]:
        return []

    include(app, router, prefix="/api")
    include(FastAPI(), router, prefix="/api")
    assert router.mounted_at == ("/api/things",)
