"""The OpenAPI document, adjusted so that it describes the wire exactly.

FastAPI files every declared response under the route's media type; Problem responses are sent
as `application/problem+json`, so their content is moved there.
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
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
