"""The rules about accounts: profile changes, roles, deactivation and the last admin."""

from __future__ import annotations

import uuid
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.logging import get_logger
from app.features.users.errors import LastAdminError, UserNotFoundError
from app.features.users.models import Role, User
from app.features.users.repository import UserRepository

log = get_logger(__name__)


class LoginRevoker(Protocol):
    """Ends every login session of a user and voids its reset links (auth's `LoginSessions`).

    Login sessions are auth's, and auth is built on users: the methods that change a user's
    credentials take one from their caller instead of importing it, so the dependency between
    the two features runs one way.
    """

    async def revoke_all(self, user_id: uuid.UUID) -> int: ...


class UserService:
    def __init__(self, session: AsyncSession) -> None:
        self.users = UserRepository(session)

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.users.get(user_id)

    async def get_many(self, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, User]:
        """Accounts by id, in one query (other features show members' names and emails)."""
        return await self.users.get_many(user_ids)

    async def require(self, user_id: uuid.UUID) -> User:
        user = await self.users.get(user_id)
        if user is None:
            raise UserNotFoundError(user_id)
        return user

    async def get_by_email(self, email: str) -> User | None:
        return await self.users.get_by_email(email)

    async def create(
        self,
        *,
        email: str,
        password_hash: str,
        full_name: str,
        role: Role = Role.user,
        is_verified: bool = False,
    ) -> User:
        user = User(
            email=email.strip().lower(),
            password_hash=password_hash,
            full_name=full_name,
            role=role,
            is_verified=is_verified,
        )
        await self.users.add(user)
        log.info("user.created", user_id=str(user.id), role=user.role.value)
        return user

    async def update_profile(self, user: User, *, full_name: str | None) -> User:
        if full_name is not None:
            user.full_name = full_name
        await self.users.flush()
        return user

    async def update(
        self,
        user: User,
        *,
        full_name: str | None = None,
        role: Role | None = None,
        is_active: bool | None = None,
        logins: LoginRevoker,
    ) -> User:
        """An admin's change; demoting or deactivating the last active admin is refused."""
        role_changed = role is not None and role != user.role
        deactivated = is_active is False and user.is_active
        if user.role == Role.admin and user.is_active and (role_changed or deactivated):
            await self._keep_an_admin(user)
        if full_name is not None:
            user.full_name = full_name
        if role is not None:
            user.role = role
        if is_active is not None:
            user.is_active = is_active
        if role_changed or deactivated:
            # The role is in every access token and an inactive user has no business with
            # any token: make every earlier token fail at once.
            await self.invalidate_tokens(user, logins)
        await self.users.flush()
        log.info(
            "user.updated",
            user_id=str(user.id),
            role=user.role.value,
            is_active=user.is_active,
            tokens_invalidated=role_changed or deactivated,
        )
        return user

    async def deactivate(self, user: User, *, logins: LoginRevoker) -> None:
        """The user closes their own account: tokens revoked, data (orders) kept."""
        if user.role == Role.admin and user.is_active:
            await self._keep_an_admin(user)
        user.is_active = False
        await self.invalidate_tokens(user, logins)
        await self.users.flush()
        log.info("user.deactivated", user_id=str(user.id))

    async def set_password(self, user: User, password_hash: str, *, logins: LoginRevoker) -> None:
        """A new password: every earlier token of the user fails, in every login session."""
        user.password_hash = password_hash
        await self.invalidate_tokens(user, logins)
        await self.users.flush()

    async def rehash_password(self, user: User, password_hash: str) -> None:
        """Same password, today's hash parameters: no token is affected."""
        user.password_hash = password_hash
        await self.users.flush()

    async def mark_verified(self, user: User) -> None:
        if not user.is_verified:
            user.is_verified = True
            await self.users.flush()
            log.info("user.verified", user_id=str(user.id))

    async def invalidate_tokens(self, user: User, logins: LoginRevoker) -> None:
        """Every access token carries the version: bumping it kills them all at once; `logins`
        ends the login sessions (their refresh tokens) and the reset links."""
        user.token_version += 1
        await logins.revoke_all(user.id)

    async def make_admin(
        self, *, email: str, password_hash: str, full_name: str, logins: LoginRevoker
    ) -> User:
        """Create an admin, or promote (and re-activate) the account of that email.

        The given password becomes the account's password either way.
        """
        user = await self.users.get_by_email(email)
        if user is None:
            return await self.create(
                email=email,
                password_hash=password_hash,
                full_name=full_name,
                role=Role.admin,
                is_verified=True,
            )
        user.role = Role.admin
        user.is_active = True
        user.password_hash = password_hash
        await self.invalidate_tokens(user, logins)
        await self.users.flush()
        log.info("user.promoted", user_id=str(user.id))
        return user

    async def _keep_an_admin(self, user: User) -> None:
        admins = await self.users.lock_active_admins()
        if not any(admin != user.id for admin in admins):
            raise LastAdminError
