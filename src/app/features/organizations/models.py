"""Organizations, their members, invitations and API keys.

The rules that must hold whatever the code does are constraints here too: one membership per
user and organization (the primary key), a unique slug that stays taken after the organization
is deleted (organizations are soft-deleted, the unique index keeps their row), one pending
invitation per email and organization (a partial unique index), emails stored lowercased.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from app.core.database import CreatedAtMixin, TimestampMixin, UUIDModel, utcnow


class OrgRole(StrEnum):
    owner = "owner"
    admin = "admin"
    member = "member"


class InvitationStatus(StrEnum):
    """What is stored; `expired` is a pending invitation past `expires_at` (computed)."""

    pending = "pending"
    accepted = "accepted"
    revoked = "revoked"


class ApiKeyScope(StrEnum):
    orders_read = "orders:read"
    orders_write = "orders:write"


def _enum(enum: type[StrEnum], name: str) -> sa.Enum:
    # VARCHAR plus a CHECK, not a native enum: adding a value later is a plain migration.
    return sa.Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


def _created_at() -> sa.Column[datetime]:
    return sa.Column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _timestamp(*, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable)


def _user_fk(*, ondelete: str, nullable: bool = False) -> sa.Column[uuid.UUID]:
    return sa.Column(sa.Uuid(), sa.ForeignKey("users.id", ondelete=ondelete), nullable=nullable)


def _org_fk() -> sa.Column[uuid.UUID]:
    # Organizations are soft-deleted, so the cascade never fires in the application's life; it
    # says what the rows are: parts of their organization.
    return sa.Column(
        sa.Uuid(), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )


class Organization(UUIDModel, TimestampMixin, table=True):
    __tablename__ = "organizations"

    name: str = Field(max_length=100)
    # Unique over every row, deleted ones included: a deleted organization's slug stays taken.
    slug: str = Field(max_length=40, unique=True)
    deleted_at: datetime | None = Field(default=None, sa_column=_timestamp())


class Membership(SQLModel, table=True):
    """A user's role in an organization; the primary key makes it one per user and org."""

    __tablename__ = "organization_members"
    __table_args__ = (
        # "My organizations" and the last-owner checks of an account.
        sa.Index("ix_organization_members_user_id", "user_id"),
    )

    organization_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(),
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        )
    )
    role: OrgRole = Field(sa_column=sa.Column(_enum(OrgRole, "org_role"), nullable=False))
    joined_at: datetime = Field(default_factory=utcnow, sa_column=_created_at())


class Invitation(UUIDModel, CreatedAtMixin, table=True):
    __tablename__ = "organization_invitations"
    __table_args__ = (
        sa.CheckConstraint("email = lower(email)", name="email_lowercase"),
        # One pending invitation per address and organization: a new one replaces it (the old
        # one is revoked in the same transaction), and two racing invitations cannot both stay.
        sa.Index(
            "uq_organization_invitations_pending",
            "organization_id",
            "email",
            unique=True,
            postgresql_where=sa.text("status = 'pending'"),
        ),
        # The organization's list, newest first.
        sa.Index(
            "ix_organization_invitations_organization_id_created_at_id",
            "organization_id",
            "created_at",
            "id",
        ),
    )

    organization_id: uuid.UUID = Field(sa_column=_org_fk())
    email: str = Field(max_length=320)
    role: OrgRole = Field(sa_column=sa.Column(_enum(OrgRole, "org_role"), nullable=False))
    status: InvitationStatus = Field(
        default=InvitationStatus.pending,
        sa_column=sa.Column(_enum(InvitationStatus, "invitation_status"), nullable=False),
    )
    # SHA-256 of the emailed token: the table alone lets nobody join.
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    # Accounts are deactivated, never deleted: RESTRICT keeps who invited whom.
    invited_by: uuid.UUID = Field(sa_column=_user_fk(ondelete="RESTRICT"))
    expires_at: datetime = Field(sa_column=_timestamp(nullable=False))
    accepted_at: datetime | None = Field(default=None, sa_column=_timestamp())
    accepted_by: uuid.UUID | None = Field(
        default=None, sa_column=_user_fk(ondelete="SET NULL", nullable=True)
    )


class ApiKey(UUIDModel, CreatedAtMixin, table=True):
    """An organization's key for machine clients; only its SHA-256 digest is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (
        sa.CheckConstraint("cardinality(scopes) > 0", name="scopes_not_empty"),
        sa.Index(
            "ix_api_keys_organization_id_created_at_id", "organization_id", "created_at", "id"
        ),
    )

    organization_id: uuid.UUID = Field(sa_column=_org_fk())
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=11)
    key_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    scopes: list[str] = Field(sa_column=sa.Column(ARRAY(sa.String(32)), nullable=False))
    # The orders a key places are this user's (API.md); RESTRICT: accounts are never deleted.
    created_by: uuid.UUID = Field(sa_column=_user_fk(ondelete="RESTRICT"))
    last_used_at: datetime | None = Field(default=None, sa_column=_timestamp())
    expires_at: datetime | None = Field(default=None, sa_column=_timestamp())
    deleted_at: datetime | None = Field(default=None, sa_column=_timestamp())
