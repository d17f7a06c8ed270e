"""Fields of PATCH bodies that may be left out but not sent as `null`.

Python sees them as `X | None = None` (None meaning "not sent"; the models reject an explicit
null with `rejecting_null`), but on the wire they are never nullable, so their JSON schema must
not say `anyOf: [X, null]`: a generated client would send null and be refused.
"""

from __future__ import annotations

from collections.abc import Callable
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


def rejecting_null(message: str = "may be left out, but not null") -> Callable[[Any], Any]:
    """A field validator that refuses an explicit null with `message` (the 422's `msg`):
    `_no_null = field_validator("name", mode="before")(rejecting_null())`.

    Only reached for a field that was sent: one left out keeps its default without validation.
    The message is a parameter because clients already see two wordings (products say "may not
    be null"), which a shared validator must not change.
    """

    def reject(value: Any) -> Any:
        if value is None:
            raise ValueError(message)
        return value

    return reject
