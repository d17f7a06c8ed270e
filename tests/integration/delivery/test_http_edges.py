"""HTTP edges the contract tests found: bodies that are not UTF-8, and `Allow` on a 405."""

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

    # One resource, one route per method: as every feature's `/{id}` routes are.
    @router.get("/test/notes/{note_id}")
    async def get_note(note_id: int) -> Note:
        return Note(text=str(note_id))

    @router.patch("/test/notes/{note_id}")
    async def update_note(note_id: int, note: Note) -> Note:
        return note

    @router.delete("/test/notes/{note_id}", status_code=204)
    async def delete_note(note_id: int) -> None:
        return None

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


class TestMethodNotAllowed:
    async def test_allow_lists_every_method_of_the_resource(
        self, make_client: Callable[..., Any]
    ) -> None:
        api: AsyncClient = await make_client(setup=_routes)
        response = await api.put("/test/notes/7", json={"text": "x"})
        assert response.status_code == 405
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["allow"] == "GET, PATCH, DELETE"
        body = response.json()
        assert body["code"] == "METHOD_NOT_ALLOWED"
        assert body["detail"] == "Method PUT not allowed on /test/notes/7"

    async def test_a_single_method_resource_allows_only_it(
        self, make_client: Callable[..., Any]
    ) -> None:
        api: AsyncClient = await make_client(setup=_routes)
        response = await api.get("/test/notes")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"

    async def test_the_methods_that_exist_still_answer(
        self, make_client: Callable[..., Any]
    ) -> None:
        api: AsyncClient = await make_client(setup=_routes)
        assert (await api.get("/test/notes/7")).json() == {"text": "7"}
        assert (await api.delete("/test/notes/7")).status_code == 204
