"""Wire shapes of accounts. `UserOut` never carries the password hash or the token version."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, WithJsonSchema, field_validator

from app.features.users.models import Role
from app.shared.pagination import Page
from app.shared.patch import omittable, rejecting_null
from app.shared.schemas import RequestModel

FullName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


# An address that was validated when it came in: sent out as it is stored. Validating it again
# on the way out ran email-validator's IDNA checks on every response (a tenth of `users/me`).
# `idn-email`: an internationalized domain is stored in its Unicode form (`user@example.ଭାରତ`
# for `user@example.xn--3hcrj9c`), which JSON Schema's `email` format refuses.
StoredEmail = Annotated[str, WithJsonSchema({"type": "string", "format": "idn-email"})]


class UserOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0190f1b8-2c3d-7e4f-8a5b-6c7d8e9f0a1b",
                    "email": "ada@example.com",
                    "full_name": "Ada Lovelace",
                    "role": "user",
                    "is_active": True,
                    "is_verified": False,
                    "created_at": "2026-12-01T12:00:00Z",
                    "updated_at": "2026-12-01T12:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    email: StoredEmail
    full_name: str
    role: Role
    is_active: bool
    is_verified: bool
    created_at: datetime
    updated_at: datetime


class UserPage(Page[UserOut]):
    """A page of users (its own OpenAPI component, `UserPage`)."""


class ProfileUpdate(RequestModel):
    """What a user may change about themselves; `role`, `email`, `is_active`... are unknown."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"full_name": "Ada King"}]})

    full_name: FullName | None = omittable()

    _no_null = field_validator("full_name", mode="before")(rejecting_null())


class UserUpdate(RequestModel):
    """An admin's change to an account; absent fields stay as they are."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"role": "admin"}, {"is_active": False}]}
    )

    full_name: FullName | None = omittable()
    role: Role | None = omittable()
    is_active: bool | None = omittable()

    _no_null = field_validator("full_name", "role", "is_active", mode="before")(rejecting_null())
