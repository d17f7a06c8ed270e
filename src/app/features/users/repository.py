"""SQL for users: returns models, turns constraint errors into domain errors."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.features.users.errors import EmailTakenError
from app.features.users.models import Role, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_many(self, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, User]:
        """The accounts of these ids (missing ones left out), by id."""
        if not user_ids:
            return {}
        result = await self.session.execute(sa.select(User).where(col(User.id).in_(user_ids)))
        return {user.id: user for user in result.scalars().all()}

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
