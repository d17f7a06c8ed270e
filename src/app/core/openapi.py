"""The OpenAPI document, adjusted so that it describes the wire exactly.

FastAPI files every declared response under the route's media type; Problem responses are sent
as `application/problem+json`, so their content is moved there. Only the tags that operations
use are listed (with their descriptions, `TAGS`), in the order given there. A list answering a
page or a cursor page says `oneOf` (FastAPI writes `anyOf`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.core.errors import PROBLEM_MEDIA_TYPE


def _move_errors_to_problem_json(schema: dict[str, Any]) -> None:
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if not status.isdigit() or int(status) < 400 or not content:
                    continue
                # Under the route's own media type (JSON, or e.g. an event stream's).
                for media_type in list(content):
                    schema_ref = content[media_type].get("schema", {}).get("$ref", "")
                    if schema_ref.endswith("/Problem") and media_type != PROBLEM_MEDIA_TYPE:
                        content[PROBLEM_MEDIA_TYPE] = content.pop(media_type)


def _unions_of_components_are_one_of(schema: dict[str, Any]) -> None:
    """A success answered as one of several named components (a page or a cursor page) is
    `oneOf` them: exactly one matches, which generated clients turn into a tagged union."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if not status.startswith("2"):
                    continue
                body = response.get("content", {}).get("application/json", {}).get("schema", {})
                choices = body.get("anyOf")
                if choices and all(set(choice) == {"$ref"} for choice in choices):
                    body["oneOf"] = body.pop("anyOf")
                    body.pop("title", None)


TAGS: list[dict[str, str]] = [
    {
        "name": "auth",
        "description": "Accounts and sessions: register, log in (JSON or the OAuth2 password "
        "form), refresh with rotation, log out, verify the email, reset the password. Tokens "
        "are answered with `Cache-Control: no-store`; these routes are rate limited per "
        "client IP.",
    },
    {
        "name": "users",
        "description": "The caller's own account (`/users/me`), and the admins' view of "
        "every account.",
    },
    {
        "name": "products",
        "description": "The catalog: public reads (cached, with ETags) and the admins' "
        "writes. Prices are integer minor units of the deployment's currency.",
    },
    {
        "name": "product-images",
        "description": "Up to 10 images per product in an S3-compatible object store: "
        "uploads judged by their bytes and stripped of metadata, WebP variants made by the "
        "worker, absolute URLs that answer a plain GET.",
    },
    {
        "name": "orders",
        "description": "Orders of catalog products: stock taken atomically, a status machine "
        "(pending, paid, shipped, delivered, cancelled), `Idempotency-Key` for safe retries, "
        "emails on creation, shipping and cancellation.",
    },
    {
        "name": "organizations",
        "description": "Teams: members and their roles, invitations by email, API keys, and "
        "the orders placed for the organization.",
    },
    {
        "name": "invitations",
        "description": "Accepting an invitation to an organization.",
    },
    {
        "name": "events",
        "description": "Order events as they happen, as Server-Sent Events (the WebSocket "
        "transport is described by the AsyncAPI document at `/asyncapi.json`).",
    },
    {
        "name": "operations",
        "description": "Liveness and readiness probes (`/metrics`, for Prometheus, is not "
        "part of this document).",
    },
]


def _used_tags(schema: dict[str, Any], tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    used: list[str] = []
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                used.extend(tag for tag in operation.get("tags", []) if tag not in used)
    described = [tag for tag in tags if tag["name"] in used]
    names = {tag["name"] for tag in described}
    return described + [{"name": name} for name in used if name not in names]


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            _move_errors_to_problem_json(schema)
            _unions_of_components_are_one_of(schema)
            schema["tags"] = _used_tags(schema, list(app.openapi_tags or TAGS))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
