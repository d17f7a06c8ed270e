"""Every error kind renders as the Problem Details envelope of API.md."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import ConflictError, RateLimitedError
from app.core.routing import make_router
from tests.problems import assert_problem


class InsufficientWidgetsError(ConflictError):
    code = "INSUFFICIENT_WIDGETS"


class Signup(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(min_length=3)
    password: str = Field(min_length=8)


def add_test_routes(app: FastAPI) -> None:
    router = make_router(prefix="/test")

    @router.post("/signup", status_code=201)
    async def signup(body: Signup) -> dict[str, str]:
        return {"email": body.email}

    @router.get("/conflict")
    async def conflict() -> None:
        raise InsufficientWidgetsError("Only 2 widgets left", extra={"available": 2})

    @router.get("/limited")
    async def limited() -> None:
        raise RateLimitedError(retry_after=7)

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail SELECT * FROM users")

    app.include_router(router)


@pytest.fixture
async def api(make_client: Callable[..., Any]) -> AsyncClient:
    client: AsyncClient = await make_client(setup=add_test_routes, max_body_bytes=1024)
    return client


async def test_domain_error_carries_code_and_extra_members(api: AsyncClient) -> None:
    response = await api.get("/test/conflict?x=1")
    body = assert_problem(response, 409, "INSUFFICIENT_WIDGETS")
    assert body["detail"] == "Only 2 widgets left"
    assert body["available"] == 2
    assert body["instance"] == "/test/conflict"
    assert body["errors"] == []


async def test_validation_error_lists_fields_without_echoing_input(api: AsyncClient) -> None:
    response = await api.post(
        "/test/signup", json={"email": "a@b.c", "password": "hunter2", "role": "admin"}
    )
    body = assert_problem(response, 422, "VALIDATION_ERROR")
    locs = sorted(error["loc"] for error in body["errors"])
    assert locs == [["body", "password"], ["body", "role"]]
    assert all(set(error) == {"loc", "msg", "type"} for error in body["errors"])
    assert "hunter2" not in response.text


async def test_malformed_json_is_a_validation_error(api: AsyncClient) -> None:
    response = await api.post(
        "/test/signup", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_unknown_route_is_404(api: AsyncClient) -> None:
    body = assert_problem(await api.get("/nope"), 404, "NOT_FOUND")
    assert body["instance"] == "/nope"


async def test_wrong_method_is_405_with_allow(api: AsyncClient) -> None:
    response = await api.delete("/test/signup")
    assert_problem(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"


async def test_declared_body_over_limit_is_413(api: AsyncClient) -> None:
    response = await api.post(
        "/test/signup",
        content=b"{" + b" " * 2000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")


async def test_streamed_body_over_limit_is_413(api: AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 200

    response = await api.post(
        "/test/signup", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")


async def test_non_json_body_is_415(api: AsyncClient) -> None:
    response = await api.post(
        "/test/signup", content=b"email=a", headers={"content-type": "text/plain"}
    )
    body = assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "text/plain" in body["detail"]


async def test_json_with_charset_is_accepted(api: AsyncClient) -> None:
    response = await api.post(
        "/test/signup",
        content=b'{"email": " a@b.c ", "password": "long enough"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201
    assert response.json() == {"email": "a@b.c"}


async def test_rate_limited_error_sets_retry_after(api: AsyncClient) -> None:
    response = await api.get("/test/limited")
    body = assert_problem(response, 429, "RATE_LIMITED")
    assert response.headers["retry-after"] == "7"
    assert body["retry_after"] == 7


async def test_unexpected_exception_is_a_generic_500_logged_once(
    api: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await api.get("/test/boom", headers={"X-Request-ID": "trace-me-1"})
    body = assert_problem(response, 500, "INTERNAL_ERROR")
    assert body["detail"] == "Internal server error"
    assert "SELECT" not in response.text
    assert "RuntimeError" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].msg["request_id"] == "trace-me-1"  # type: ignore[index]
