"""Refresh tokens (one row per issued token, grouped by session) and emailed one-time tokens.

Only SHA-256 digests of the secrets are stored: a copy of these tables lets nobody log in,
verify an address or reset a password. Both secrets are random (256 bits), so a fast hash is
enough; argon2 would only add latency.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field

from app.core.database import CreatedAtMixin, UUIDModel


def _timestamp(*, nullable: bool, index: bool = False) -> sa.Column[datetime]:
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable, index=index)


class LoginSession(UUIDModel, CreatedAtMixin, table=True):
    """A login: the `sid` of every token it issues, through every rotation of its refresh token.

    The row is what refresh and revocation agree on. Both lock it (`SELECT ... FOR UPDATE`)
    before they act, so a logout (or a reuse detection) and a refresh of the same session run
    one after the other: a refresh that committed first has its new tokens revoked by the
    logout, and one that comes second finds `revoked_at` set and gets 401.
    """

    __tablename__ = "login_sessions"

    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    revoked_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))


class RefreshToken(UUIDModel, CreatedAtMixin, table=True):
    """One refresh token of a login session (`session_id`).

    Rotation marks the presented token used (`used_at`) and issues the next one in the same
    session; presenting a used token again (after the grace window) revokes the session.
    """

    __tablename__ = "refresh_tokens"

    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    session_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(),
            sa.ForeignKey("login_sessions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        )
    )
    jti_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    expires_at: datetime = Field(sa_column=_timestamp(nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))


class EmailTokenPurpose(StrEnum):
    verify_email = "verify_email"
    reset_password = "reset_password"  # noqa: S105 - a purpose, not a password


class EmailToken(UUIDModel, CreatedAtMixin, table=True):
    """A single-use, expiring token sent by email (address verification, password reset)."""

    __tablename__ = "email_tokens"

    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    purpose: EmailTokenPurpose = Field(
        sa_column=sa.Column(
            sa.Enum(
                EmailTokenPurpose,
                name="email_token_purpose",
                native_enum=False,
                create_constraint=True,
                length=32,
                values_callable=lambda purposes: [purpose.value for purpose in purposes],
            ),
            nullable=False,
        )
    )
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    expires_at: datetime = Field(sa_column=_timestamp(nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=_timestamp(nullable=True))
