"""Cursors of the order lists: newest first, so the key is `(created_at, id)` of the last order
of a page, and the next page is the orders strictly before it (`(created_at, id) < key`).

The cursor is bound to the list (`orders`), its filters (`status`, `user_id`) and the caller, like
every cursor (`app.shared.cursor`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.config import Settings
from app.shared.cursor import Cursors, CursorScope, InvalidCursorError

LIST = "orders"


def order_scope(
    caller: uuid.UUID | str,
    *,
    status: str | None,
    user_id: uuid.UUID | None,
    list_name: str = LIST,
) -> CursorScope:
    return CursorScope(
        list=list_name,
        caller=str(caller),
        filters={"status": status, "user_id": str(user_id) if user_id else None},
    )


def order_key(created_at: datetime, order_id: uuid.UUID) -> list[str]:
    return [created_at.isoformat(), str(order_id)]


def parse_order_key(key: list[Any]) -> tuple[datetime, uuid.UUID]:
    try:
        return datetime.fromisoformat(str(key[0])), uuid.UUID(str(key[1]))
    except (IndexError, ValueError):  # pragma: no cover - we signed it
        raise InvalidCursorError from None


def order_list_cursor(
    settings: Settings, *, caller: uuid.UUID | str, created_at: datetime, order_id: uuid.UUID
) -> str:
    """The cursor after order (`created_at`, `order_id`) in the caller's unfiltered list (what
    the benchmark's deep page starts from)."""
    cursors = Cursors(settings.jwt_secret.get_secret_value())
    scope = order_scope(caller, status=None, user_id=None)
    return cursors.encode(scope, order_key(created_at, order_id))
