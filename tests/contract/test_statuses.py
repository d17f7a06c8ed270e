"""Every status a route declares because of its shape is real: each is driven here, on every
operation of the OpenAPI document, whichever feature adds it.

- 415: every JSON route, sent another content type;
- 413: every route with a JSON or form body, sent a body over `APP_MAX_BODY_BYTES`;
- 503: every route that declares it, with PostgreSQL and Redis both unreachable (a valid token,
  and the schema's example as the body, so that only the outage can refuse the request).

The schemathesis run (test_openapi.py) checks the other direction: every status the app answers
is documented.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from httpx import AsyncClient

from app.config import Settings
from app.core.database import uuid7
from app.core.security import Tokens
from app.dev import free_port
from tests.contract.document import schema
from tests.problems import PROBLEM

DOCUMENT: dict[str, Any] = schema.raw_schema
METHODS = {"get", "post", "put", "patch", "delete"}
# /ready answers its own 503 document (not a Problem), tested with the health checks.
OWN_503 = {"GET /ready"}


def _operations() -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


OPERATIONS = _operations()


def _body_types(operation: dict[str, Any]) -> set[str]:
    return set(operation.get("requestBody", {}).get("content", {}))


def _url(label: str) -> tuple[str, str]:
    method, path = label.split(" ", 1)
    # Every path parameter of this API is a UUID.
    return method, re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)


def _example(operation: dict[str, Any]) -> Any:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    ref = content["schema"].get("$ref", "")
    component = DOCUMENT["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
    examples = component.get("examples") or [{}]
    return examples[0]


def _assert_problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


@pytest.mark.parametrize(
    "label", [label for label, op in OPERATIONS.items() if "application/json" in _body_types(op)]
)
async def test_every_json_route_answers_415_to_another_content_type(
    client: AsyncClient, label: str
) -> None:
    assert "415" in OPERATIONS[label]["responses"]
    method, url = _url(label)
    response = await client.request(
        method, url, content=b"email=a", headers={"Content-Type": "text/plain"}
    )
    _assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    "label",
    [
        label
        for label, op in OPERATIONS.items()
        if _body_types(op) & {"application/json", "application/x-www-form-urlencoded"}
    ],
)
async def test_every_route_with_a_body_answers_413_over_the_limit(
    make_client: Callable[..., Any], label: str
) -> None:
    assert "413" in OPERATIONS[label]["responses"]
    api: AsyncClient = await make_client(max_body_bytes=1024)
    method, url = _url(label)
    content_type = sorted(_body_types(OPERATIONS[label]))[0]
    response = await api.request(
        method, url, content=b"{" + b" " * 2048 + b"}", headers={"Content-Type": content_type}
    )
    _assert_problem(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.fixture
async def unreachable(make_client: Callable[..., Any], settings: Settings) -> AsyncClient:
    """An app whose PostgreSQL and Redis refuse every connection (nothing listens there)."""
    client: AsyncClient = await make_client(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    return client


@pytest.mark.parametrize(
    "label",
    [
        label
        for label, op in OPERATIONS.items()
        if "503" in op["responses"] and label not in OWN_503
    ],
)
async def test_every_route_declaring_503_answers_it_when_the_services_are_down(
    unreachable: AsyncClient, settings: Settings, label: str
) -> None:
    token, _ = Tokens(settings).encode(
        type="access", subject=uuid7(), session_id=uuid7(), version=0, role="admin"
    )
    method, url = _url(label)
    body = _example(OPERATIONS[label])
    form = "application/x-www-form-urlencoded" in _body_types(OPERATIONS[label])
    response = await unreachable.request(
        method,
        url,
        headers={"Authorization": f"Bearer {token}"},
        json=body if body is not None else None,
        data={"username": "ada@example.com", "password": "correct horse battery"} if form else None,
    )
    _assert_problem(response, 503, "SERVICE_UNAVAILABLE")


def test_every_business_route_is_driven_into_its_503() -> None:
    """No route escapes the test above: only /health needs nothing, /ready has its own 503."""
    without = {label for label, op in OPERATIONS.items() if "503" not in op["responses"]}
    assert without == {"GET /health"}
