"""Fields of PATCH bodies that may be left out but not sent as `null`.

Python sees them as `X | None = None` (None meaning "not sent"; the models reject an explicit
null in a validator), but on the wire they are never nullable, so their JSON schema must not say
`anyOf: [X, null]`: a generated client would send null and be refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field


def _not_nullable(schema: dict[str, Any]) -> None:
    alternatives = schema.pop("anyOf", None)
    if alternatives is not None:
        kept = [item for item in alternatives if item.get("type") != "null"]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    schema.pop("default", None)


def omittable(**kwargs: Any) -> Any:
    """`field: X | None = omittable()`: optional in the body, never null in it."""
    return Field(default=None, json_schema_extra=_not_nullable, **kwargs)
