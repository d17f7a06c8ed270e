"""Background jobs of orders (registered in `app.worker` by its owner).

`purge_idempotency_keys` deletes stored outcomes past their 24 h; lookups already ignore expired
ones, so this only bounds the table. Idempotent: running it twice deletes nothing more.
"""

from __future__ import annotations

from typing import Any

from app.core.database import session_scope, utcnow
from app.core.logging import get_logger
from app.features.orders.repository import OrderRepository

log = get_logger(__name__)


async def purge_idempotency_keys(ctx: dict[str, Any]) -> int:
    async with session_scope(ctx["session_factory"]) as session:
        deleted = await OrderRepository(session).purge_keys(now=utcnow())
    log.info("idempotency_keys.purged", deleted=deleted)
    return deleted
