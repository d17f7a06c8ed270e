"""The one check that a response is a Problem Details document (API.md, "Errors")."""

from __future__ import annotations

from typing import Any

from httpx import Response

PROBLEM = "application/problem+json"


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    """The response is the Problem Details envelope of API.md with this status and code; its
    body, for the test's own checks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    assert isinstance(body["errors"], list)
    return body


def locs(body: dict[str, Any]) -> list[list[str | int]]:
    """Where each field error of a 422 points (`["body", "items", 0, "quantity"]`)."""
    return [error["loc"] for error in body["errors"]]
