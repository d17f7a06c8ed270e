"""`OrgAccess`: the proof, resolved once per request, that the caller may touch one organization.

Every query of an organization's data goes through `OrgRepository`, which cannot be built
without an `OrgAccess` and filters every statement by `access.org_id`; and an `OrgAccess` can
only be made here, from a membership read from the database or from an authenticated API key
of that organization (`tests/unit/test_architecture.py` checks that nothing else constructs
one). So a route cannot reach another organization's rows by passing the wrong id: it never
holds an access for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from app.features.organizations.models import OrgRole

# Only this module holds it; `OrgAccess.__post_init__` refuses any other value.
_SEAL = object()


@dataclass(frozen=True, slots=True)
class OrgSummary:
    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OrgAccess:
    """Who acts on organization `org_id`: a member (`user_id`, `role`) or an API key."""

    org_id: uuid.UUID
    user_id: uuid.UUID | None
    role: OrgRole | None
    api_key_id: uuid.UUID | None
    scopes: frozenset[str]
    organization: OrgSummary | None
    _seal: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._seal is not _SEAL:
            raise TypeError("an OrgAccess is made by app.features.organizations.access only")

    @property
    def is_key(self) -> bool:
        return self.api_key_id is not None

    def has_role(self, *roles: OrgRole) -> bool:
        return self.role is not None and self.role in roles


def member_access(organization: OrgSummary, *, user_id: uuid.UUID, role: OrgRole) -> OrgAccess:
    """The access of a member, from their membership row (read with the organization's)."""
    return OrgAccess(
        org_id=organization.id,
        user_id=user_id,
        role=role,
        api_key_id=None,
        scopes=frozenset(),
        organization=organization,
        _seal=_SEAL,
    )


def key_access(org_id: uuid.UUID, *, api_key_id: uuid.UUID, scopes: frozenset[str]) -> OrgAccess:
    """The access of an authenticated API key, to its own organization only."""
    return OrgAccess(
        org_id=org_id,
        user_id=None,
        role=None,
        api_key_id=api_key_id,
        scopes=scopes,
        organization=None,
        _seal=_SEAL,
    )
