"""`Idempotency-Key`: any write route made safe to retry with one line.

    @router.post("", dependencies=[idempotent(get_current_user)])

The dependency takes a transaction-scoped advisory lock on (caller, key) in the request's own
session, then either replays the stored outcome of an earlier request with that key, refuses
(another body: 422 `IDEMPOTENCY_KEY_REUSED`; the first request still running: 409
`IDEMPOTENCY_KEY_IN_USE`), or lets the route run. The route class (`app.core.routing.AppRoute`)
then stores the route's outcome, a 2xx or a 4xx, in the same transaction, before the session
commits: a stored outcome exists if and only if the work it describes was committed. A 4xx
raised by the route first discards whatever the route did (the transaction is rolled back, and
its after-commit work dropped); a 5xx stores nothing, so a retry runs again.

Keys are per caller and kept 24 h; `purge_idempotency_keys` (a worker cron) bounds the table.
The fingerprint of a request is its method, route and body as canonical JSON.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol

from fastapi import Depends, Header, Request, Response
from sqlalchemy import Column, DateTime, ForeignKey, Index, String, Text, Uuid, delete, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, col

from app.core.database import (
    CreatedAtMixin,
    DeferredInsert,
    SessionDep,
    discard,
    flush_deferred,
    session_scope,
    utcnow,
)
from app.core.errors import AppError, ConflictError, ValidationFailedError, app_error_response
from app.core.logging import get_logger

log = get_logger(__name__)

IDEMPOTENCY_TTL = timedelta(hours=24)
REPLAYED_HEADER = "Idempotent-Replayed"
_PENDING = "app.idempotency"


class IdempotencyRecord(CreatedAtMixin, table=True):
    """The first outcome of a request with an `Idempotency-Key`, written in the same
    transaction as the work it describes, so one can never exist without the other."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    user_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    key: str = Field(sa_column=Column(String(255), primary_key=True, nullable=False))
    request_hash: str = Field(sa_type=String(64), nullable=False)
    response_status: int = Field(nullable=False)
    response_body: str = Field(sa_type=Text, nullable=False)
    response_content_type: str = Field(sa_type=String(64), nullable=False)
    location: str | None = Field(default=None, sa_type=String(255), nullable=True)
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)


class IdempotencyKeyInUseError(ConflictError):
    code = "IDEMPOTENCY_KEY_IN_USE"
    default_detail = "A request with this Idempotency-Key is still being processed; retry later"


class IdempotencyKeyReusedError(ValidationFailedError):
    code = "IDEMPOTENCY_KEY_REUSED"
    default_detail = "This Idempotency-Key was already used with a different request body"


IDEMPOTENCY_ERRORS = (IdempotencyKeyInUseError, IdempotencyKeyReusedError)

# Built once: every keyed request runs these.
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock_key, 0))")
_GET = text(
    "SELECT request_hash, response_status, response_body, response_content_type, location, "
    "expires_at FROM idempotency_keys WHERE user_id = :user_id AND key = :key"
)
# The lock and the lookup in one round trip. The lookup's snapshot is taken as the statement
# starts, before the lock: a first request that commits its outcome in between is not seen
# here, so this request runs too, but its own INSERT of the outcome then hits the primary key,
# and its work is discarded for a replay of the first (`PendingKey.store`).
_LOCK_AND_GET = text(
    "SELECT pg_try_advisory_xact_lock(hashtextextended(:lock_key, 0)) AS locked, "
    "k.request_hash, k.response_status, k.response_body, k.response_content_type, k.location, "
    "k.expires_at FROM (SELECT 1) AS one LEFT JOIN idempotency_keys AS k "
    "ON k.user_id = :user_id AND k.key = :key"
)
_DELETE = text("DELETE FROM idempotency_keys WHERE user_id = :user_id AND key = :key")
# Sent with every row the route held back (`flush_deferred`): the outcome and the work it
# describes reach the database in one round trip.
_ADD = DeferredInsert(
    "idempotency_keys",
    (
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, "
        "response_body, response_content_type, location, created_at, expires_at) VALUES "
        "(:user_id, :key, :request_hash, :response_status, :response_body, "
        ":response_content_type, :location, :created_at, :expires_at)",
    ),
)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="Makes the request safe to retry: a repeat with the same key and body "
        "returns the first response (kept 24 h, per user) instead of running again.",
    ),
]

REPLAYED_HEADERS: dict[str, Any] = {
    REPLAYED_HEADER: {
        "description": "`true` when this is the stored response of an earlier request with "
        "the same Idempotency-Key (nothing was done this time).",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


class Principal(Protocol):
    """Whoever the keys belong to: the dependency given to `idempotent` returns one."""

    @property
    def id(self) -> uuid.UUID: ...


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    status_code: int
    body: bytes
    content_type: str
    location: str | None

    def response(self) -> Response:
        headers = {"Location": self.location} if self.location else {}
        headers[REPLAYED_HEADER] = "true"
        return Response(
            self.body, status_code=self.status_code, media_type=self.content_type, headers=headers
        )


class Replay(Exception):  # noqa: N818 - not an error: the route answers with the stored outcome
    def __init__(self, outcome: StoredOutcome) -> None:
        super().__init__("replay")
        self.outcome = outcome


@dataclass(slots=True)
class PendingKey:
    """A key this request holds the lock of, with no outcome stored yet."""

    session: AsyncSession
    user_id: uuid.UUID
    key: str
    fingerprint: str

    async def store(self, response: Response, request: Request) -> Response:
        """Keep `response` as the key's outcome; if another request with the key committed its
        outcome first (see `_LOCK_AND_GET`), discard this one's work and answer with that."""
        try:
            await self._add(response)
        except IntegrityError:
            await discard(self.session)
            row = (
                await self.session.execute(_GET, {"user_id": self.user_id, "key": self.key})
            ).first()
            if row is None:  # pragma: no cover - the row that conflicted is committed
                raise
            log.info("idempotency.lost_race", user_id=str(self.user_id))
            if row.request_hash != self.fingerprint:
                return app_error_response(request.scope, IdempotencyKeyReusedError())
            return _outcome(row).response()
        return response

    async def _add(self, response: Response) -> None:
        now = utcnow()
        await flush_deferred(
            self.session,
            _ADD,
            {
                "user_id": self.user_id,
                "key": self.key,
                "request_hash": self.fingerprint,
                "response_status": response.status_code,
                "response_body": bytes(response.body).decode(),
                "response_content_type": response.headers.get("content-type", ""),
                "location": response.headers.get("location"),
                "created_at": now,
                "expires_at": now + IDEMPOTENCY_TTL,
            },
        )

    async def store_error(self, request: Request, exc: AppError) -> Response:
        """The route refused: undo what it did, then keep (and answer) the refusal."""
        response = app_error_response(request.scope, exc)
        await discard(self.session)
        # The rollback released the lock; a request with the same key that took it since then
        # runs on its own (this one wrote nothing), and this outcome is not kept.
        if await _try_lock(self.session, self.user_id, self.key):
            return await self.store(response, request)
        return response


def _outcome(row: Any) -> StoredOutcome:
    return StoredOutcome(
        row.response_status, row.response_body.encode(), row.response_content_type, row.location
    )


def _fingerprint(request: Request, body: bytes) -> str:
    """Method, route and body as canonical JSON (sorted keys, no spacing), hashed."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except ValueError:
        canonical = body  # not JSON: the route's own validation answers it
    route = request.scope.get("route")
    head = f"{request.method} {getattr(route, 'path', request.url.path)}\n".encode()
    return hashlib.sha256(head + canonical).hexdigest()


async def _body_is_invalid(request: Request, body: bytes) -> bool:
    """Whether the route's own validation refuses this body (its 422 then comes first)."""
    field = getattr(request.scope.get("route"), "body_field", None)
    if field is None:
        return False
    try:
        value = json.loads(body)
    except ValueError:
        return True
    _, errors = field.validate(value, {}, loc=("body",))
    return bool(errors)


async def _try_lock(session: AsyncSession, user_id: uuid.UUID, key: str) -> bool:
    # Transaction-scoped: held until the commit, so a concurrent request with the same key sees
    # it taken instead of waiting.
    locked = await session.scalar(_TRY_LOCK, {"lock_key": f"idempotency:{user_id}:{key}"})
    return bool(locked)


async def _begin(request: Request, session: AsyncSession, user_id: uuid.UUID, key: str) -> None:
    body = await request.body()
    fingerprint = _fingerprint(request, body)
    params = {"user_id": user_id, "key": key}
    found = (
        await session.execute(_LOCK_AND_GET, {**params, "lock_key": f"idempotency:{user_id}:{key}"})
    ).one()
    if not found.locked:
        if await _body_is_invalid(request, body):
            return
        raise IdempotencyKeyInUseError
    row = found if found.request_hash is not None else None
    if row is not None and row.expires_at <= utcnow():
        await session.execute(_DELETE, params)
        row = None
    if row is not None:
        if row.request_hash != fingerprint:
            if await _body_is_invalid(request, body):
                return
            raise IdempotencyKeyReusedError
        log.info("idempotency.replayed", user_id=str(user_id), status=row.response_status)
        raise Replay(_outcome(row))
    request.scope[_PENDING] = PendingKey(session, user_id, key, fingerprint)


def idempotent(principal: Callable[..., Any]) -> Any:
    """A route dependency that makes the route idempotent under an `Idempotency-Key` header.

    `principal` is the dependency of the caller the keys belong to (it returns an object with
    an `id`, and optionally an `idempotency_scope` string that keeps its keys apart from other
    callers of the same `id`). Without the header the route runs as usual. List the route's
    409 and 422 with `IDEMPOTENCY_ERRORS` and its replayed header with `REPLAYED_HEADERS`.
    """

    async def idempotency(
        request: Request, session: AsyncSession, caller: Principal, key: str | None
    ) -> None:
        if key is not None:
            scope = getattr(caller, "idempotency_scope", None)
            if scope:
                # A caller with a scope of its own (an organization's API key, acting as its
                # creator): its keys are kept apart from the creator's, under a digest that
                # fits the column whatever the key's length.
                key = f"{scope}:{hashlib.sha256(key.encode()).hexdigest()}"
            await _begin(request, session, caller.id, key)

    # The signature FastAPI reads, with `principal` as a sub-dependency: entered after the
    # caller is authenticated, so a 401 or 403 is never stored.
    parameter = inspect.Parameter
    idempotency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            parameter("request", parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            parameter("session", parameter.POSITIONAL_OR_KEYWORD, annotation=SessionDep),
            parameter(
                "caller",
                parameter.POSITIONAL_OR_KEYWORD,
                annotation=Annotated[Any, Depends(principal)],
            ),
            parameter(
                "key",
                parameter.POSITIONAL_OR_KEYWORD,
                default=None,
                annotation=IdempotencyKeyHeader,
            ),
        ]
    )
    return Depends(idempotency)


def pending_key(request: Request) -> PendingKey | None:
    """The key the request holds, once the route may run (for `AppRoute`)."""
    pending: PendingKey | None = request.scope.get(_PENDING)
    return pending


async def purge_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Worker cron: delete stored outcomes past their 24 h. Lookups already ignore expired
    ones, so this only bounds the table; running it twice deletes nothing more."""
    async with session_scope(ctx["session_factory"]) as session:
        result = await session.execute(
            delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) <= utcnow())
        )
    deleted = int(getattr(result, "rowcount", 0) or 0)
    log.info("idempotency_keys.purged", deleted=deleted)
    return deleted
