"""The OpenAPI document, adjusted so that it describes the wire exactly.

FastAPI files every declared response under `application/json`; Problem responses are sent
as `application/problem+json`, so their content is moved there. A list answering a page or a
cursor page says `oneOf` (FastAPI writes `anyOf`).
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
                schema_ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
                if schema_ref.endswith("/Problem"):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")


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
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
