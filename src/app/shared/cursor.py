"""Cursor pages (API.md, Pagination): `?limit=20&cursor=...` in, `{items, next_cursor}` out.

A cursor carries the sort key of the last row of a page; the next page is the rows after it in the
list's order (keyset pagination: `WHERE (name, id) > (:name, :id)`), so a deep page costs what the
first does, and rows added or changed between calls neither repeat nor skip the others.

Cursors are opaque and tamper-evident: `<key as base64url JSON>.<HMAC-SHA256, 128 bits>`, the HMAC
keyed by a key derived from `APP_JWT_SECRET` and computed over the key *and* the list, its filters
and the caller. A cursor that was edited, or that is presented to another list, with other filters
or by another caller, fails the check: 422. The filters are not in the token, so it stays short and
says nothing about them.

Each list route takes `list_params` (either form, never both) and answers a page or a cursor page;
`Cursors` (on `app.state.cursors`) signs and checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field

from app.core.errors import ValidationFailedError
from app.shared.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, ItemT, PageParams

_KEY_CONTEXT = b"saas-backend/cursor/v1"
_MAC_BYTES = 16
MAX_CURSOR_LENGTH = 1024


class InvalidCursorError(ValidationFailedError):
    def __init__(self) -> None:
        msg = "The cursor is not valid for this list, its filters and this caller"
        super().__init__(
            msg, errors=[{"loc": ["query", "cursor"], "msg": msg, "type": "cursor_invalid"}]
        )


class MixedPaginationError(ValidationFailedError):
    def __init__(self, names: Sequence[str]) -> None:
        msg = "Use either page/page_size or limit/cursor, not both"
        super().__init__(
            msg,
            errors=[
                {"loc": ["query", name], "msg": msg, "type": "pagination_mixed"} for name in names
            ],
        )


class CursorPage(BaseModel, Generic[ItemT]):
    """One page of a cursor walk; `next_cursor` is null on the last page."""

    items: list[ItemT]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when there is none. Opaque."
    )


@dataclass(frozen=True, slots=True)
class CursorParams:
    limit: int = DEFAULT_PAGE_SIZE
    cursor: str | None = None


ListParams = PageParams | CursorParams


@dataclass(frozen=True, slots=True)
class CursorScope:
    """What a cursor is bound to: the list, its filters (as the route applies them) and the
    caller (a user id, or `anonymous`)."""

    list: str
    caller: str
    filters: Mapping[str, Any] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(
            [self.list, self.caller, dict(self.filters)], sort_keys=True, default=str
        ).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Cursors:
    """Signs and checks cursors with a key derived from the JWT secret (never the secret itself)."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), _KEY_CONTEXT, hashlib.sha256).digest()

    def _mac(self, scope: CursorScope, body: bytes) -> bytes:
        message = scope.encoded() + b"\n" + body
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, scope: CursorScope, key: Sequence[Any]) -> str:
        body = json.dumps(list(key), separators=(",", ":"), default=str).encode()
        return f"{_b64(body)}.{_b64(self._mac(scope, body))}"

    def decode(self, scope: CursorScope, token: str) -> list[Any]:
        """The sort key in `token`, or InvalidCursorError (422)."""
        body_part, _, mac_part = token.partition(".")
        try:
            body, mac = _unb64(body_part), _unb64(mac_part)
        except (binascii.Error, ValueError):
            raise InvalidCursorError from None
        if not hmac.compare_digest(mac, self._mac(scope, body)):
            raise InvalidCursorError
        key = json.loads(body)
        if not isinstance(key, list):  # pragma: no cover - we signed it
            raise InvalidCursorError
        return key


async def list_params(
    page: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="1-based page number (page form).")
    ] = None,
    page_size: Annotated[
        int | None,
        Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page, 1-100 (page form)."),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_PAGE_SIZE,
            description="Items per page, 1-100 (cursor form): answers a cursor page.",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            description="`next_cursor` of the previous cursor page (opaque).",
        ),
    ] = None,
) -> ListParams:
    """The page form (`page`, `page_size`, the default) or the cursor form (`limit`, `cursor`);
    both at once is 422."""
    given = {"page": page, "page_size": page_size, "limit": limit, "cursor": cursor}
    cursor_form = [name for name in ("limit", "cursor") if given[name] is not None]
    page_form = [name for name in ("page", "page_size") if given[name] is not None]
    if cursor_form and page_form:
        raise MixedPaginationError(page_form + cursor_form)
    if cursor_form:
        return CursorParams(limit=limit or DEFAULT_PAGE_SIZE, cursor=cursor)
    return PageParams(page=page or 1, page_size=page_size or DEFAULT_PAGE_SIZE)


ListParamsDep = Annotated[ListParams, Depends(list_params)]


def cursors_of(request: Request) -> Cursors:
    cursors: Cursors = request.app.state.cursors
    return cursors


CursorsDep = Annotated[Cursors, Depends(cursors_of)]
