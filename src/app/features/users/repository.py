"""SQL for users: returns models, turns constraint errors into domain errors."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.database import driver_connection
from app.features.users.errors import EmailTakenError
from app.features.users.models import Role, User

# Every column of the table, named from its own metadata (no input goes into this text).
_COLUMNS = ", ".join(User.__table__.columns.keys())  # type: ignore[attr-defined]
_SELECT_BY_ID = f"SELECT {_COLUMNS} FROM users WHERE id = $1"  # noqa: S608


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_untracked(self, user_id: uuid.UUID) -> User | None:
        """The user as an object the session does not track, read with one asyncpg query.

        For read-only requests, where the caller's account is only looked at: the ORM's load
        costs about three times as much CPU, and it runs on every authenticated request.
        Changing the returned object changes nothing in the database.
        """
        row = await (await driver_connection(self.session)).fetchrow(_SELECT_BY_ID, user_id)
        if row is None:
            return None
        values = dict(row)
        values["role"] = Role(values["role"])
        return User(**values)

    async def token_states(
        self, user_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[bool, int, Role]]:
        """(is_active, token_version, role) of each of these users that exists, in one query."""
        if not user_ids:
            return {}
        rows = await (await driver_connection(self.session)).fetch(
            "SELECT id, is_active, token_version, role FROM users WHERE id = ANY($1::uuid[])",
            list(user_ids),
        )
        return {
            row["id"]: (row["is_active"], row["token_version"], Role(row["role"])) for row in rows
        }

    async def get_by_email(self, email: str) -> User | None:
        result = await self.session.execute(
            sa.select(User).where(User.email == email.strip().lower())  # type: ignore[arg-type]
        )
        return result.scalar_one_or_none()

    async def add(self, user: User) -> User:
        """Insert; the unique index (emails are stored lowercased) answers EMAIL_TAKEN."""
        try:
            async with self.session.begin_nested():
                self.session.add(user)
                await self.session.flush()
        except IntegrityError as exc:
            if "uq_users_email" in str(exc.orig):
                raise EmailTakenError from None
            raise
        return user

    async def flush(self) -> None:
        await self.session.flush()

    async def search(
        self,
        *,
        role: Role | None,
        is_active: bool | None,
        q: str | None,
        offset: int,
        limit: int,
    ) -> tuple[Sequence[User], int]:
        """A page of users, newest first (id breaks ties), and the total that match."""
        conditions: list[sa.ColumnElement[bool]] = []
        if role is not None:
            conditions.append(User.role == role)  # type: ignore[arg-type]
        if is_active is not None:
            conditions.append(User.is_active == is_active)  # type: ignore[arg-type]
        if q:
            pattern = _like_pattern(q)
            conditions.append(
                sa.or_(
                    User.email.ilike(pattern, escape="\\"),  # type: ignore[attr-defined]
                    User.full_name.ilike(pattern, escape="\\"),  # type: ignore[attr-defined]
                )
            )
        total = await self.session.scalar(
            sa.select(sa.func.count()).select_from(User).where(*conditions)
        )
        result = await self.session.execute(
            sa.select(User)
            .where(*conditions)
            .order_by(User.created_at.desc(), User.id.desc())  # type: ignore[attr-defined]
            .offset(offset)
            .limit(limit)
        )
        return result.scalars().all(), int(total or 0)

    async def lock_active_admins(self) -> list[uuid.UUID]:
        """Lock every active admin row and return their ids.

        Two admins demoting each other at once both wait here; the second sees the first's
        change once it commits, so the last admin can never be removed by a race.
        """
        result = await self.session.execute(
            sa.select(col(User.id))
            .where(col(User.role) == Role.admin, col(User.is_active).is_(True))
            .order_by(col(User.id))
            .with_for_update()
        )
        return list(result.scalars().all())
