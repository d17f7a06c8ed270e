"""The read side of organizations: a caller's membership, through the read-only connection, for
the read routes that resolve an `OrgAccess` (one indexed lookup per request)."""

from __future__ import annotations

import uuid

from sqlalchemy import Table, bindparam, select

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
