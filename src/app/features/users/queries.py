"""The read side of users: accounts as frozen views, read through the read-only connection.

The caller of every read route is authenticated here (`UserQueries.get`): a view that cannot be
changed, so a read route cannot silently drop a write. The password hash is not among its
columns.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from pydantic import TypeAdapter
from sqlalchemy import String, Table, Uuid, any_, bindparam, func, or_, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from app.core.reads import ReadConnection, ReadQuery, Row, read_query
from app.features.users.models import AccessEpoch, Role, User
from app.shared.text import like_pattern

_USERS: Table = User.__table__  # type: ignore[attr-defined]
_ACCESS_EPOCH: Table = AccessEpoch.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class UserView:
    """An account as read: everything but the password hash."""

    id: uuid.UUID
    email: str
    full_name: str
    role: Role
    is_active: bool
    is_verified: bool
    token_version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> UserView:
        return cls(
            id=row["id"],
            email=row["email"],
            full_name=row["full_name"],
            role=Role(row["role"]),
            is_active=row["is_active"],
            is_verified=row["is_verified"],
            token_version=row["token_version"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


# The view's fields, looked up in the table's metadata: a column renamed or dropped fails here.
_COLUMNS = [_USERS.c[field.name] for field in fields(UserView)]
_BY_ID = read_query(select(*_COLUMNS).where(_USERS.c.id == bindparam("user_id")))
_TOKEN_STATES = read_query(
    select(_USERS.c.id, _USERS.c.is_active, _USERS.c.token_version, _USERS.c.role).where(
        _USERS.c.id == any_(bindparam("user_ids", type_=ARRAY(Uuid())))
    )
)
_ACCESS_EPOCH_VALUE = read_query(select(_ACCESS_EPOCH.c.value))


@dataclass(frozen=True, slots=True)
class TokenState:
    """What decides whether a user's tokens still hold (and what they may see)."""

    is_active: bool
    token_version: int
    role: Role


def _search_queries(*, role: bool, is_active: bool, q: bool) -> tuple[ReadQuery, ReadQuery]:
    conditions: list[ColumnElement[bool]] = [true()]
    if role:
        conditions.append(_USERS.c.role == bindparam("role"))
    if is_active:
        conditions.append(_USERS.c.is_active == bindparam("is_active"))
    if q:
        pattern = bindparam("pattern", type_=String())
        conditions.append(
            or_(
                _USERS.c.email.ilike(pattern, escape="\\"),
                _USERS.c.full_name.ilike(pattern, escape="\\"),
            )
        )
    page = (
        select(*_COLUMNS)
        .where(*conditions)
        .order_by(_USERS.c.created_at.desc(), _USERS.c.id.desc())
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    count = select(func.count()).select_from(_USERS).where(*conditions)
    return read_query(page), read_query(count)


# One compiled pair per combination of filters (each gets its own plan).
_SEARCHES = {
    (role, is_active, q): _search_queries(role=role, is_active=is_active, q=q)
    for role in (False, True)
    for is_active in (False, True)
    for q in (False, True)
}


# Serialised by pydantic's core straight from the view: the bytes of UserOut's
# `model_dump_json` (its fields, in its order: the view's less `token_version`), without
# validating a UserOut first (tests/integration/users check they are the same).
_USER_JSON = TypeAdapter(UserView)
_NOT_SHOWN = {"token_version"}


def user_json(user: UserView) -> bytes:
    """The account as `UserOut` JSON."""
    return _USER_JSON.dump_json(user, exclude=_NOT_SHOWN)


class UserQueries:
    def __init__(self, connection: ReadConnection) -> None:
        self.connection = connection

    async def get(self, user_id: uuid.UUID) -> UserView | None:
        row = await self.connection.fetchrow(_BY_ID, user_id=user_id)
        return None if row is None else UserView.from_row(row)

    async def token_states(self, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, TokenState]:
        """The token state of each of these users that exists, in one query (long-lived
        connections re-check theirs in bulk)."""
        if not user_ids:
            return {}
        rows = await self.connection.fetch(_TOKEN_STATES, user_ids=list(user_ids))
        return {
            row["id"]: TokenState(row["is_active"], row["token_version"], Role(row["role"]))
            for row in rows
        }

    async def access_epoch(self) -> int:
        """The counter that moves at the commit of every change of an account's access or of
        a membership (`AccessEpoch`); 0 before the first one."""
        value = await self.connection.fetchval(_ACCESS_EPOCH_VALUE)
        return int(value or 0)

    async def search(
        self,
        *,
        role: Role | None,
        is_active: bool | None,
        q: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[UserView], int]:
        """A page of accounts, newest first (id breaks ties), and how many match in all."""
        page, count = _SEARCHES[(role is not None, is_active is not None, bool(q))]
        values: dict[str, object] = {}
        if role is not None:
            values["role"] = role.value
        if is_active is not None:
            values["is_active"] = is_active
        if q:
            values["pattern"] = like_pattern(q)
        rows = await self.connection.fetch(page, offset=offset, limit=limit, **values)
        total = await self.connection.fetchval(count, **values)
        return [UserView.from_row(row) for row in rows], int(total)
