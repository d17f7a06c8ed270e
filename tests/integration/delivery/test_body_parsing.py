"""Bodies that are not UTF-8 (found by the contract tests): a 422 like any malformed JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import BaseModel, ConfigDict

from app.core.routing import make_router


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


def _routes(app: FastAPI) -> None:
    router = make_router()

    @router.post("/test/notes", status_code=201)
    async def create_note(note: Note) -> Note:
        return note

    app.include_router(router)


async def test_a_body_that_is_not_utf8_is_a_validation_error(
    make_client: Callable[..., Any],
) -> None:
    api: AsyncClient = await make_client(setup=_routes)
    response = await api.post(
        "/test/notes", content=b"\xff\x1c\x05\x18p", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["instance"] == "/test/notes"
    assert body["errors"] == [
        {
            "loc": ["body"],
            "msg": "JSON decode error: the body is not valid UTF-8",
            "type": "json_invalid",
        }
    ]


async def test_a_valid_utf8_body_still_reaches_the_endpoint(
    make_client: Callable[..., Any],
) -> None:
    api: AsyncClient = await make_client(setup=_routes)
    response = await api.post("/test/notes", json={"text": "héllo"})
    assert response.status_code == 201
    assert response.json() == {"text": "héllo"}
