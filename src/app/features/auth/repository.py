"""SQL for refresh tokens and emailed tokens. Consuming a token is one atomic UPDATE."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import utcnow, uuid7
from app.features.auth.models import EmailToken, EmailTokenPurpose, LoginSession, RefreshToken


@dataclass(frozen=True, slots=True)
class LockedSession:
    user_id: uuid.UUID
    revoked: bool


class LoginSessionRepository:
    """The session rows. `lock` and the revoking UPDATEs take the row lock that orders a
    refresh and a revocation of the same session one after the other."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *, session_id: uuid.UUID, user_id: uuid.UUID) -> None:
        table = LoginSession.__table__  # type: ignore[attr-defined]
        await self.session.execute(
            sa.insert(table).values(id=session_id, user_id=user_id, created_at=utcnow())
        )

    async def lock(self, session_id: uuid.UUID) -> LockedSession | None:
        """`SELECT ... FOR UPDATE`: waits for a concurrent refresh or revocation to commit."""
        table = LoginSession.__table__  # type: ignore[attr-defined]
        result = await self.session.execute(
            sa.select(table.c.user_id, table.c.revoked_at)
            .where(table.c.id == session_id)
            .with_for_update()
        )
        row = result.first()
        return LockedSession(row.user_id, row.revoked_at is not None) if row else None

    async def revoke(self, session_id: uuid.UUID) -> bool:
        """Mark the session revoked (the UPDATE waits for the row lock of a refresh)."""
        table = LoginSession.__table__  # type: ignore[attr-defined]
        result = await self.session.execute(
            sa.update(table)
            .where(table.c.id == session_id, table.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_user(self, user_id: uuid.UUID) -> int:
        table = LoginSession.__table__  # type: ignore[attr-defined]
        result = await self.session.execute(
            sa.update(table)
            .where(table.c.user_id == user_id, table.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        jti_hash: str,
        issued_at: datetime,
        expires_at: datetime,
    ) -> None:
        # One INSERT, not an ORM object and a flush: every login and refresh writes a token,
        # and nothing reads it back within the request.
        table = RefreshToken.__table__  # type: ignore[attr-defined]
        await self.session.execute(
            sa.insert(table).values(
                id=uuid7(),
                user_id=user_id,
                session_id=session_id,
                jti_hash=jti_hash,
                # The token's own `iat`: a pair re-issued in the grace window is signed again
                # from it, byte for byte (see AuthService.refresh).
                created_at=issued_at,
                expires_at=expires_at,
            )
        )

    async def consume(self, jti_hash: str) -> tuple[uuid.UUID, uuid.UUID] | None:
        """Mark a live token used and return its (user_id, session_id); None if it is not live.

        One UPDATE ... WHERE used_at IS NULL: of two concurrent refreshes with the same token,
        exactly one gets the row back.
        """
        now = utcnow()
        table = RefreshToken.__table__  # type: ignore[attr-defined]
        result = await self.session.execute(
            sa.update(table)
            .where(
                table.c.jti_hash == jti_hash,
                table.c.used_at.is_(None),
                table.c.revoked_at.is_(None),
                table.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(table.c.user_id, table.c.session_id)
        )
        row = result.first()
        return (row.user_id, row.session_id) if row else None

    async def find(self, jti_hash: str) -> RefreshToken | None:
        result = await self.session.execute(
            sa.select(RefreshToken).where(RefreshToken.jti_hash == jti_hash)  # type: ignore[arg-type]
        )
        return result.scalar_one_or_none()

    async def revoke_session(self, session_id: uuid.UUID) -> int:
        table = RefreshToken.__table__  # type: ignore[attr-defined]
        result = await self.session.execute(
            sa.update(table)
            .where(table.c.session_id == session_id, table.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_user(self, user_id: uuid.UUID) -> int:
        table = RefreshToken.__table__  # type: ignore[attr-defined]
        result = await self.session.execute(
            sa.update(table)
            .where(table.c.user_id == user_id, table.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class EmailTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        user_id: uuid.UUID,
        purpose: EmailTokenPurpose,
        token_hash: str,
        expires_at: datetime,
    ) -> EmailToken:
        token = EmailToken(
            user_id=user_id, purpose=purpose, token_hash=token_hash, expires_at=expires_at
        )
        self.session.add(token)
        await self.session.flush()
        return token

    async def consume(self, purpose: EmailTokenPurpose, token_hash: str) -> uuid.UUID | None:
        """Mark a live token used and return its user id; None if unknown, used or expired."""
        now = utcnow()
        table = EmailToken.__table__  # type: ignore[attr-defined]
        result = await self.session.execute(
            sa.update(table)
            .where(
                table.c.token_hash == token_hash,
                table.c.purpose == purpose.value,
                table.c.used_at.is_(None),
                table.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(table.c.user_id)
        )
        user_id: uuid.UUID | None = result.scalar_one_or_none()
        return user_id

    async def find(self, purpose: EmailTokenPurpose, token_hash: str) -> EmailToken | None:
        result = await self.session.execute(
            sa.select(EmailToken).where(
                EmailToken.token_hash == token_hash,  # type: ignore[arg-type]
                EmailToken.purpose == purpose,  # type: ignore[arg-type]
            )
        )
        return result.scalar_one_or_none()

    async def expire_for_user(self, user_id: uuid.UUID, purpose: EmailTokenPurpose) -> None:
        """Use up every outstanding token of this kind (after a reset: one link, one use)."""
        table = EmailToken.__table__  # type: ignore[attr-defined]
        await self.session.execute(
            sa.update(table)
            .where(
                table.c.user_id == user_id,
                table.c.purpose == purpose.value,
                table.c.used_at.is_(None),
            )
            .values(used_at=utcnow())
        )
