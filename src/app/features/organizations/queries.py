"""The read side of organizations: a caller's membership, through the read-only connection, for
the read routes that resolve an `OrgAccess` (one indexed lookup per request)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import ARRAY, Table, Uuid, any_, bindparam, select

from app.core.reads import ReadConnection, read_query
from app.features.organizations.access import OrgAccess, OrgSummary, member_access
from app.features.organizations.models import Membership, Organization, OrgRole

_ORGS: Table = Organization.__table__  # type: ignore[attr-defined]
_MEMBERS: Table = Membership.__table__  # type: ignore[attr-defined]

_MEMBERSHIP = read_query(
    select(
        _ORGS.c.id,
        _ORGS.c.name,
        _ORGS.c.slug,
        _ORGS.c.created_at,
        _ORGS.c.updated_at,
        _MEMBERS.c.role,
    )
    .join_from(_MEMBERS, _ORGS, _ORGS.c.id == _MEMBERS.c.organization_id)
    .where(
        _MEMBERS.c.organization_id == bindparam("org_id"),
        _MEMBERS.c.user_id == bindparam("user_id"),
        _ORGS.c.deleted_at.is_(None),
    )
)

# The live organizations of many users at once: the real-time streams re-read their viewers'
# audiences every few seconds in one round trip for all of a process's connections.
_MEMBERSHIPS_OF = read_query(
    select(_MEMBERS.c.user_id, _MEMBERS.c.organization_id)
    .join_from(_MEMBERS, _ORGS, _ORGS.c.id == _MEMBERS.c.organization_id)
    .where(
        _MEMBERS.c.user_id == any_(bindparam("user_ids", type_=ARRAY(Uuid()))),
        _ORGS.c.deleted_at.is_(None),
    )
)


class OrgQueries:
    def __init__(self, connection: ReadConnection) -> None:
        self.connection = connection

    async def access(self, org_id: uuid.UUID, user_id: uuid.UUID) -> OrgAccess | None:
        """The member's access to a live organization; None for a non-member."""
        row = await self.connection.fetchrow(_MEMBERSHIP, org_id=org_id, user_id=user_id)
        if row is None:
            return None
        summary = OrgSummary(
            row["id"], row["name"], row["slug"], row["created_at"], row["updated_at"]
        )
        return member_access(summary, user_id=user_id, role=OrgRole(row["role"]))

    async def organizations_of(
        self, user_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, list[uuid.UUID]]:
        """The live organizations each of these users is a member of now."""
        rows = await self.connection.fetch(_MEMBERSHIPS_OF, user_ids=list(user_ids))
        memberships: dict[uuid.UUID, list[uuid.UUID]] = {}
        for row in rows:
            memberships.setdefault(row["user_id"], []).append(row["organization_id"])
        return memberships
