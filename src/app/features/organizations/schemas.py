"""Organizations on the wire. `ApiKeyOut` never holds the key; only `ApiKeyCreated` does, once."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, EmailStr, Field, StringConstraints, field_validator

from app.features.organizations.models import ApiKeyScope, OrgRole
from app.features.users.schemas import StoredEmail
from app.shared.pagination import Page
from app.shared.patch import omittable, rejecting_null
from app.shared.schemas import RequestModel

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{2,39}$"

OrgName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Slug = Annotated[
    str,
    StringConstraints(pattern=SLUG_PATTERN),
    Field(description="3-40 characters: lowercase letters, digits, `-`; not first a `-`."),
]
KeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class InvitationStatusOut(StrEnum):
    """Stored statuses plus `expired`: a pending invitation past its `expires_at`."""

    pending = "pending"
    accepted = "accepted"
    revoked = "revoked"
    expired = "expired"


class OrganizationCreate(RequestModel):
    name: OrgName
    slug: Slug | None = Field(
        default=None,
        description="Absent: derived from the name (a random suffix when taken, never a 409).",
    )


class OrganizationUpdate(RequestModel):
    name: OrgName | None = omittable()
    slug: Slug | None = omittable()

    _no_null = field_validator("name", "slug", mode="before")(rejecting_null())


class OrganizationOut(BaseModel):
    id: uuid.UUID
    name: str
    slug: str
    role: OrgRole = Field(description="The caller's role in this organization.")
    created_at: datetime
    updated_at: datetime


class OrganizationPage(Page[OrganizationOut]):
    """A page of the caller's organizations, by name."""


class MemberOut(BaseModel):
    user_id: uuid.UUID
    email: StoredEmail
    full_name: str
    role: OrgRole
    joined_at: datetime


class MemberPage(Page[MemberOut]):
    """A page of an organization's members, by `joined_at`."""


class MemberRoleUpdate(RequestModel):
    role: OrgRole


class InvitationCreate(RequestModel):
    email: EmailStr
    role: OrgRole = Field(description="`owner` may be given by an owner only.")


class InvitationOut(BaseModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    email: StoredEmail
    role: OrgRole
    status: InvitationStatusOut
    invited_by: uuid.UUID
    created_at: datetime
    expires_at: datetime


class InvitationPage(Page[InvitationOut]):
    """A page of an organization's invitations, newest first."""


class InvitationAccept(RequestModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class ApiKeyCreate(RequestModel):
    name: KeyName
    scopes: Annotated[list[ApiKeyScope], Field(min_length=1, max_length=len(ApiKeyScope))]
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="Absent: the key never expires (`expires_at` null)."
    )

    @field_validator("scopes")
    @classmethod
    def _a_set(cls, scopes: list[ApiKeyScope]) -> list[ApiKeyScope]:
        if len(set(scopes)) != len(scopes):
            raise ValueError("each scope at most once")
        return scopes


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first 11 characters, to tell keys apart.")
    scopes: list[ApiKeyScope]
    created_by: uuid.UUID
    created_at: datetime
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    expires_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself: shown in this response only, never again.")


class ApiKeyPage(Page[ApiKeyOut]):
    """A page of an organization's API keys, newest first (never the keys themselves)."""
