"""Ending login sessions in PostgreSQL: the part of auth that the users feature needs too.

Kept apart from `AuthService` so that `UserService` (which auth's service builds on) can revoke a
user's refresh tokens on deactivation or a role change without an import cycle.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.features.auth.models import EmailTokenPurpose
from app.features.auth.repository import (
    EmailTokenRepository,
    LoginSessionRepository,
    RefreshTokenRepository,
)

# A logged-out (or stolen-and-revoked) session's id is kept here until its last access token
# could have expired; the refresh tokens of the session are revoked in PostgreSQL.
REVOKED_SESSION_KEY = "auth:revoked-session:{session_id}"


def revoked_session_key(session_id: uuid.UUID) -> str:
    return REVOKED_SESSION_KEY.format(session_id=session_id)


class SessionService:
    def __init__(self, session: AsyncSession) -> None:
        self.login_sessions = LoginSessionRepository(session)
        self.refresh_tokens = RefreshTokenRepository(session)
        self.email_tokens = EmailTokenRepository(session)

    async def revoke_all(self, user_id: uuid.UUID) -> int:
        """Revoke every refresh token of every session of the user, and void its reset links.

        Called on every credential change (password change or reset, role change,
        deactivation): a reset link mailed before it must not undo it. Access tokens are
        killed by the bump of `token_version` that goes with this call.
        """
        await self.email_tokens.expire_for_user(user_id, EmailTokenPurpose.reset_password)
        await self.login_sessions.revoke_user(user_id)
        return await self.refresh_tokens.revoke_user(user_id)

    async def revoke(self, session_id: uuid.UUID) -> int:
        """End one session: its row first (this waits for a refresh holding its lock to
        commit), then every refresh token it has, the one that refresh just issued included.
        Returns how many tokens were revoked."""
        await self.login_sessions.revoke(session_id)
        return await self.refresh_tokens.revoke_session(session_id)
