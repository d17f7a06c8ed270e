"""SQL for refresh tokens and emailed tokens. Consuming a token is one atomic UPDATE."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import utcnow, uuid7
from app.features.auth.models import EmailToken, EmailTokenPurpose, RefreshToken


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID, jti_hash: str, expires_at: datetime
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
                created_at=utcnow(),
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
