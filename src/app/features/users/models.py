"""The `users` table: accounts, their role and the state that gates their tokens."""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.core.database import TimestampMixin, UUIDModel


class Role(StrEnum):
    user = "user"
    admin = "admin"


class User(UUIDModel, TimestampMixin, table=True):
    __tablename__ = "users"
    __table_args__ = (sa.CheckConstraint("email = lower(email)", name="email_lowercase"),)

    # Stored lowercased (API.md: emails compare case-insensitively), so a plain unique index
    # is the case-insensitive uniqueness rule.
    email: str = Field(max_length=320, unique=True)
    password_hash: str = Field(max_length=255)
    full_name: str = Field(max_length=200)
    role: Role = Field(
        default=Role.user,
        sa_type=sa.Enum(
            Role,
            name="user_role",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda roles: [role.value for role in roles],
        ),
    )
    is_active: bool = Field(default=True, index=True)
    is_verified: bool = False
    # Carried in every token as `ver`; bumping it (password change or reset, deactivation, role
    # change) makes every earlier token of the user fail at once, in every session.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class AccessEpoch(SQLModel, table=True):
    """One row, whose `value` moves whenever something that gates a long-lived connection
    changes: an account's `is_active`, `token_version` or `role`, a membership, an
    organization's deletion. Triggers bump it at commit (migration 0012), whatever wrote the
    change; the event hub reads it to know when its streams need re-checking (`liveness`)."""

    __tablename__ = "access_epoch"
    __table_args__ = (sa.CheckConstraint("id", name="single_row"),)

    id: bool = Field(default=True, primary_key=True, sa_column_kwargs={"server_default": "true"})
    value: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
