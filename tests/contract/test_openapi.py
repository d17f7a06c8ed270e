"""The OpenAPI document is the contract: schemathesis checks the app against it, in-process.

For every operation of the app's OpenAPI document, hypothesis generates valid and invalid
requests, and each is sent as an admin and as a user. Every response must be no 5xx, have a
documented status code and content type, match the documented schema and headers; invalid input
must be rejected and valid input not refused; a protected route must refuse a request without
its token.

The run is bounded: APP_TEST_CONTRACT_EXAMPLES (default 20) examples per operation, no
deadline, no shrinking, deterministic data (the same cases on every run, so CI is reproducible).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from schemathesis.python import asgi

from app.features.users.models import Role, User
from app.main import create_app
from tests.conftest import SettingsFactory
from tests.contract.document import schema

MAX_EXAMPLES = int(os.environ.get("APP_TEST_CONTRACT_EXAMPLES", "20"))

HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def contract_app(make_settings: SettingsFactory) -> Iterator[FastAPI]:
    """The app under contract, its lifespan run by schemathesis' event loop.

    Rate limits are off: they would turn most generated requests into 429s and hide the
    behaviour behind them.
    """
    application = create_app(make_settings(rate_limit_enabled=False))
    yield application
    asgi.shutdown_lifespans()


@pytest.fixture
async def tokens(
    make_user: Callable[..., Awaitable[User]],
    auth_headers: Callable[[User], Awaitable[dict[str, str]]],
) -> dict[str, dict[str, str]]:
    """An Authorization header per role, of users that exist for the whole test."""
    admin = await make_user(role=Role.admin)
    user = await make_user(role=Role.user)
    return {"admin": await auth_headers(admin), "user": await auth_headers(user)}


# The event stream answers an endless `text/event-stream` to a valid token, which a request-
# response checker cannot read to its end; its errors and stream are tested by the events tests.
@schema.exclude(path="/api/v1/events", method="GET").parametrize()
@HYPOTHESIS
def test_every_operation_keeps_its_documented_contract(
    case: schemathesis.Case, contract_app: FastAPI, tokens: dict[str, dict[str, str]]
) -> None:
    for headers in tokens.values():
        case.call_and_validate(headers=headers, app=contract_app)


def test_the_served_document_is_the_one_under_contract(contract_app: FastAPI) -> None:
    with asgi.get_client(contract_app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == schema.raw_schema
