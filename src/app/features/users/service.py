"""The rules about accounts."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.features.users.models import User
from app.features.users.repository import UserRepository


class UserService:
    def __init__(self, session: AsyncSession) -> None:
        self.users = UserRepository(session)

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.users.get(user_id)
