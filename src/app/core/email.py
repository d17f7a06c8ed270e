"""TEMPORARY stand-in for the jobs branch's `queue_email` (CONTRACTS.md), same signature.

Replaced by the real module (outbox, templates, worker) when main with the jobs work is merged.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import uuid7


async def queue_email(
    session: AsyncSession, *, to: str, template: str, context: dict[str, Any]
) -> uuid.UUID:
    return uuid7()
