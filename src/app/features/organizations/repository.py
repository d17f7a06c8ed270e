"""SQL of organizations. Everything of one organization goes through `OrgRepository`, which takes
an `OrgAccess` and filters every statement by its organization; `OrganizationDirectory` holds
the few queries that come before any access exists (creating an organization, finding the
caller's memberships, an invitation by its token, an API key by its hash)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col

from app.core.database import utcnow
from app.features.organizations.access import OrgAccess, OrgSummary
from app.features.organizations.errors import SlugTakenError
from app.features.organizations.models import (
    ApiKey,
    Invitation,
    InvitationStatus,
    Membership,
    Organization,
    OrgRole,
)


@dataclass(frozen=True, slots=True)
class MembershipRow:
    user_id: uuid.UUID
    role: OrgRole
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: uuid.UUID
    organization_id: uuid.UUID
    scopes: list[str]
    created_by: uuid.UUID
    expires_at: datetime | None


_ORGS = Organization.__table__  # type: ignore[attr-defined]
_MEMBERS = Membership.__table__  # type: ignore[attr-defined]
_KEYS = ApiKey.__table__  # type: ignore[attr-defined]
# Invitations of one address to one organization take this lock (to the end of their transaction).
_LOCK_INVITATION = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
# Built once: every request of a member runs the first, every key cache miss the second.
_MEMBERSHIP = (
    sa.select(
        _ORGS.c.id,
        _ORGS.c.name,
        _ORGS.c.slug,
        _ORGS.c.created_at,
        _ORGS.c.updated_at,
        _MEMBERS.c.role,
    )
    .join_from(_MEMBERS, _ORGS, _ORGS.c.id == _MEMBERS.c.organization_id)
    .where(
        _MEMBERS.c.organization_id == sa.bindparam("org_id"),
        _MEMBERS.c.user_id == sa.bindparam("user_id"),
        _ORGS.c.deleted_at.is_(None),
    )
)
_KEY_BY_HASH = (
    sa.select(
        _KEYS.c.id,
        _KEYS.c.organization_id,
        _KEYS.c.scopes,
        _KEYS.c.created_by,
        _KEYS.c.expires_at,
    )
    .join_from(_KEYS, _ORGS, _ORGS.c.id == _KEYS.c.organization_id)
    .where(
        _KEYS.c.key_hash == sa.bindparam("key_hash"),
        _KEYS.c.deleted_at.is_(None),
        _ORGS.c.deleted_at.is_(None),
    )
)
_TOUCH_KEY = (
    sa.update(_KEYS).where(_KEYS.c.id == sa.bindparam("key_id")).values(last_used_at=sa.func.now())
)


def summary_of(org: Organization) -> OrgSummary:
    return OrgSummary(org.id, org.name, org.slug, org.created_at, org.updated_at)


async def _insert_org(session: AsyncSession, org: Organization) -> None:
    try:
        async with session.begin_nested():
            session.add(org)
            await session.flush()
    except IntegrityError as exc:
        if "uq_organizations_slug" in str(exc.orig):
            raise SlugTakenError from None
        raise


class OrganizationDirectory:
    """Queries that precede an `OrgAccess`, or span the caller's own memberships."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, org: Organization, *, owner_id: uuid.UUID) -> None:
        """Insert the organization (SLUG_TAKEN on a used slug) and its first owner."""
        await _insert_org(self.session, org)
        self.session.add(Membership(organization_id=org.id, user_id=owner_id, role=OrgRole.owner))
        await self.session.flush()

    async def membership(
        self, org_id: uuid.UUID, user_id: uuid.UUID
    ) -> tuple[OrgSummary, OrgRole] | None:
        """The organization and the user's role in it, in one indexed lookup (the primary key
        of the membership, then the organization's): None for a non-member or a deleted one."""
        row = (
            await self.session.execute(_MEMBERSHIP, {"org_id": org_id, "user_id": user_id})
        ).first()
        if row is None:
            return None
        summary = OrgSummary(row.id, row.name, row.slug, row.created_at, row.updated_at)
        return summary, OrgRole(row.role)

    async def list_for_user(
        self, user_id: uuid.UUID, *, offset: int, limit: int
    ) -> tuple[list[tuple[OrgSummary, OrgRole]], int]:
        """The user's organizations by name (id breaks ties), and how many there are."""
        conditions = (
            col(Membership.user_id) == user_id,
            col(Organization.deleted_at).is_(None),
        )
        joined = sa.join(
            Organization, Membership, col(Membership.organization_id) == col(Organization.id)
        )
        total = await self.session.scalar(
            sa.select(sa.func.count()).select_from(joined).where(*conditions)
        )
        result = await self.session.execute(
            sa.select(Organization, col(Membership.role))
            .select_from(joined)
            .where(*conditions)
            .order_by(col(Organization.name), col(Organization.id))
            .offset(offset)
            .limit(limit)
        )
        return [(summary_of(org), OrgRole(role)) for org, role in result.all()], int(total or 0)

    async def organizations_of(self, user_id: uuid.UUID) -> list[tuple[OrgSummary, OrgRole]]:
        """Every live organization the user is a member of, with their role (id order)."""
        result = await self.session.execute(
            sa.select(Organization, col(Membership.role))
            .join(Membership, col(Membership.organization_id) == col(Organization.id))
            .where(col(Membership.user_id) == user_id, col(Organization.deleted_at).is_(None))
            .order_by(col(Organization.id))
        )
        return [(summary_of(org), OrgRole(role)) for org, role in result.all()]

    async def invitation_by_token(self, token_hash: str) -> Invitation | None:
        """The invitation of a token, locked for this transaction (accepting uses it once)."""
        result = await self.session.execute(
            sa.select(Invitation)
            .join(Organization, col(Organization.id) == col(Invitation.organization_id))
            .where(
                col(Invitation.token_hash) == token_hash,
                col(Organization.deleted_at).is_(None),
            )
            .with_for_update(of=Invitation)
        )
        return result.scalar_one_or_none()

    async def organization(self, org_id: uuid.UUID) -> OrgSummary | None:
        org = await self.session.get(Organization, org_id)
        return summary_of(org) if org is not None and org.deleted_at is None else None

    async def join(self, org_id: uuid.UUID, user_id: uuid.UUID, role: OrgRole) -> OrgRole:
        """Make the user a member (their existing role is kept if they already are one)."""
        await self.session.execute(
            pg_insert(Membership)
            .values(organization_id=org_id, user_id=user_id, role=role)
            .on_conflict_do_nothing(index_elements=["organization_id", "user_id"])
        )
        current = await self.session.scalar(
            sa.select(col(Membership.role)).where(
                col(Membership.organization_id) == org_id, col(Membership.user_id) == user_id
            )
        )
        return OrgRole(str(current))


async def key_by_hash(engine: AsyncEngine, key_hash: str) -> KeyRow | None:
    """A live key (not deleted, its organization not deleted) by its digest.

    On its own short connection: the lookup of a key runs before any route has a session or a
    read connection, and only on a cache miss (once a minute per key).
    """
    async with engine.connect() as connection:
        row = (await connection.execute(_KEY_BY_HASH, {"key_hash": key_hash})).first()
    if row is None:
        return None
    return KeyRow(row.id, row.organization_id, list(row.scopes), row.created_by, row.expires_at)


async def touch_key(engine: AsyncEngine, key_id: uuid.UUID) -> None:
    """`last_used_at = now()`, in autocommit (at most once a minute per key)."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(_TOUCH_KEY, {"key_id": key_id})


class OrgRepository:
    """Every read and write of one organization's data; cannot be built without its access."""

    def __init__(self, session: AsyncSession, access: OrgAccess) -> None:
        self.session = session
        self.org_id = access.org_id

    # The organization itself

    async def _org(self) -> Organization:
        org = await self.session.get(Organization, self.org_id, with_for_update=True)
        assert org is not None  # an access exists only for an existing organization
        return org

    async def update(self, *, name: str | None, slug: str | None) -> OrgSummary:
        org = await self._org()
        if name is not None:
            org.name = name
        if slug is not None and slug != org.slug:
            org.slug = slug
            try:
                async with self.session.begin_nested():
                    await self.session.flush()
            except IntegrityError as exc:
                if "uq_organizations_slug" in str(exc.orig):
                    raise SlugTakenError from None
                raise
        await self.session.flush()
        await self.session.refresh(org)
        return summary_of(org)

    async def soft_delete(self) -> list[str]:
        """Mark the organization deleted, revoke its pending invitations and delete its keys;
        returns the digests of the keys that were live (their cached lookups must go)."""
        org = await self._org()
        org.deleted_at = utcnow()
        await self.session.execute(
            sa.update(Invitation)
            .where(
                col(Invitation.organization_id) == self.org_id,
                col(Invitation.status) == InvitationStatus.pending,
            )
            .values(status=InvitationStatus.revoked)
        )
        result = await self.session.execute(
            sa.update(ApiKey)
            .where(col(ApiKey.organization_id) == self.org_id, col(ApiKey.deleted_at).is_(None))
            .values(deleted_at=sa.func.now())
            .returning(col(ApiKey.key_hash))
        )
        hashes = list(result.scalars().all())
        await self.session.flush()
        return hashes

    # Members (their accounts' email, name and activity come from the users feature)

    @staticmethod
    def _row(row: Any) -> MembershipRow:
        return MembershipRow(row.user_id, OrgRole(row.role), row.joined_at)

    def _memberships(self) -> Any:
        return sa.select(
            col(Membership.user_id), col(Membership.role), col(Membership.joined_at)
        ).where(col(Membership.organization_id) == self.org_id)

    async def members(self, *, offset: int, limit: int) -> tuple[list[MembershipRow], int]:
        """Members by `joined_at` (user id breaks ties), and how many there are."""
        total = await self.session.scalar(
            sa.select(sa.func.count())
            .select_from(Membership)
            .where(col(Membership.organization_id) == self.org_id)
        )
        result = await self.session.execute(
            self._memberships()
            .order_by(col(Membership.joined_at), col(Membership.user_id))
            .offset(offset)
            .limit(limit)
        )
        return [self._row(row) for row in result.all()], int(total or 0)

    async def member(self, user_id: uuid.UUID) -> MembershipRow | None:
        result = await self.session.execute(
            self._memberships().where(col(Membership.user_id) == user_id)
        )
        row = result.one_or_none()
        return self._row(row) if row is not None else None

    async def member_ids(self) -> list[uuid.UUID]:
        result = await self.session.execute(
            sa.select(col(Membership.user_id)).where(col(Membership.organization_id) == self.org_id)
        )
        return list(result.scalars().all())

    async def lock_owners(self) -> list[uuid.UUID]:
        """Lock the organization's owner rows (in user id order, so no two callers deadlock)
        and return their user ids.

        Whoever changes owners takes these locks first: two owners demoting each other at once
        run one after the other, and the second sees the first's change.
        """
        result = await self.session.execute(
            sa.select(col(Membership.user_id))
            .where(
                col(Membership.organization_id) == self.org_id,
                col(Membership.role) == OrgRole.owner,
            )
            .order_by(col(Membership.user_id))
            .with_for_update()
        )
        return list(result.scalars().all())

    async def owners(self) -> list[uuid.UUID]:
        """The owners' user ids. A statement of its own: run after `lock_owners`, it sees what
        the transactions it waited for committed (READ COMMITTED)."""
        result = await self.session.execute(
            sa.select(col(Membership.user_id)).where(
                col(Membership.organization_id) == self.org_id,
                col(Membership.role) == OrgRole.owner,
            )
        )
        return list(result.scalars().all())

    async def set_role(self, user_id: uuid.UUID, role: OrgRole) -> None:
        await self.session.execute(
            sa.update(Membership)
            .where(
                col(Membership.organization_id) == self.org_id,
                col(Membership.user_id) == user_id,
            )
            .values(role=role)
        )

    async def remove_member(self, user_id: uuid.UUID) -> None:
        await self.session.execute(
            sa.delete(Membership).where(
                col(Membership.organization_id) == self.org_id,
                col(Membership.user_id) == user_id,
            )
        )

    async def is_member(self, user_id: uuid.UUID) -> bool:
        return await self.member(user_id) is not None

    # Invitations

    async def revoke_pending_invitation(self, email: str) -> None:
        """The pending invitation of this address (expired or not) becomes `revoked`.

        Takes the address's lock first (held to the end of the transaction): two invitations
        of one address at once then run one after the other, the later replacing the earlier,
        instead of both finding none pending and one failing on the index that allows one."""
        await self.session.execute(
            _LOCK_INVITATION, {"key": f"organization_invitation:{self.org_id}:{email}"}
        )
        await self.session.execute(
            sa.update(Invitation)
            .where(
                col(Invitation.organization_id) == self.org_id,
                col(Invitation.email) == email,
                col(Invitation.status) == InvitationStatus.pending,
            )
            .values(status=InvitationStatus.revoked)
        )

    async def add_invitation(self, invitation: Invitation) -> None:
        if invitation.organization_id != self.org_id:
            raise ValueError("an invitation of another organization")
        self.session.add(invitation)
        await self.session.flush()

    async def invitations(
        self, *, status: str | None, now: datetime, offset: int, limit: int
    ) -> tuple[Sequence[Invitation], int]:
        """Invitations newest first (id breaks ties); `status` may be `expired` (computed)."""
        conditions: list[sa.ColumnElement[bool]] = [col(Invitation.organization_id) == self.org_id]
        if status == "expired":
            conditions += [
                col(Invitation.status) == InvitationStatus.pending,
                col(Invitation.expires_at) <= now,
            ]
        elif status == "pending":
            conditions += [
                col(Invitation.status) == InvitationStatus.pending,
                col(Invitation.expires_at) > now,
            ]
        elif status is not None:
            conditions.append(col(Invitation.status) == status)
        total = await self.session.scalar(
            sa.select(sa.func.count()).select_from(Invitation).where(*conditions)
        )
        result = await self.session.execute(
            sa.select(Invitation)
            .where(*conditions)
            .order_by(col(Invitation.created_at).desc(), col(Invitation.id).desc())
            .offset(offset)
            .limit(limit)
        )
        return result.scalars().all(), int(total or 0)

    async def invitation(self, invitation_id: uuid.UUID) -> Invitation | None:
        result = await self.session.execute(
            sa.select(Invitation)
            .where(
                col(Invitation.id) == invitation_id,
                col(Invitation.organization_id) == self.org_id,
            )
            .with_for_update()
        )
        return result.scalar_one_or_none()

    # API keys

    async def add_key(self, key: ApiKey) -> None:
        if key.organization_id != self.org_id:
            raise ValueError("a key of another organization")
        self.session.add(key)
        await self.session.flush()

    async def keys(self, *, offset: int, limit: int) -> tuple[Sequence[ApiKey], int]:
        """Live keys newest first (id breaks ties): deleted ones disappear."""
        conditions = (col(ApiKey.organization_id) == self.org_id, col(ApiKey.deleted_at).is_(None))
        total = await self.session.scalar(
            sa.select(sa.func.count()).select_from(ApiKey).where(*conditions)
        )
        result = await self.session.execute(
            sa.select(ApiKey)
            .where(*conditions)
            .order_by(col(ApiKey.created_at).desc(), col(ApiKey.id).desc())
            .offset(offset)
            .limit(limit)
        )
        return result.scalars().all(), int(total or 0)

    async def delete_key(self, key_id: uuid.UUID) -> str | None:
        """Delete a live key; its digest (for the cache), or None when there is no such key."""
        result = await self.session.execute(
            sa.update(ApiKey)
            .where(
                col(ApiKey.id) == key_id,
                col(ApiKey.organization_id) == self.org_id,
                col(ApiKey.deleted_at).is_(None),
            )
            .values(deleted_at=sa.func.now())
            .returning(col(ApiKey.key_hash))
        )
        digest: str | None = result.scalar_one_or_none()
        return digest
