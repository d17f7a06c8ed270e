"""The transactional outbox: its table and the only code that reads or writes it.

A job asked for by a request is a row written in the request's own transaction (`enqueue`), so
it exists if and only if that work committed. After the commit the row is handed to the queue
(`app.core.jobs`: the dispatcher's fast path, and the worker's relay for what Redis could not take
at that moment), which marks it handed off (`complete`). The worker reads the job's payload from
the row (`load`): Redis only ever carries the outbox id. A job done with a payload that may hold a
secret blanks that part (`scrub`). Handed-off rows are deleted after the retention period
(`prune`).

No other module touches the `outbox` table (tests/unit/test_architecture.py checks it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple, Protocol

from sqlalchemy import (
    ARRAY,
    Column,
    DateTime,
    Index,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import Field, col

from app.core import tracing
from app.core.database import (
    CreatedAtMixin,
    DeferredInsert,
    UUIDModel,
    after_commit,
    defer,
    session_scope,
    utcnow,
    uuid7,
)
from app.core.logging import get_logger

log = get_logger(__name__)


class OutboxMessage(UUIDModel, CreatedAtMixin, table=True):
    """A job asked for by a committed transaction; `sent_at` is set once ARQ has it."""

    __tablename__: ClassVar[str] = "outbox"
    __table_args__: ClassVar[tuple[Any, ...]] = (
        # The relay's query: unsent rows, oldest first. Partial, so it stays as small as the
        # backlog however many sent rows the retention period keeps.
        Index("ix_outbox_unsent", "created_at", "id", postgresql_where=text("sent_at IS NULL")),
        # Pruning: sent rows older than the retention period.
        Index("ix_outbox_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
    )

    job_name: str = Field(max_length=200)
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # The W3C trace context (`traceparent`) of the transaction that wrote the row, when tracing
    # is on: the worker continues that trace, so a job is a child of the request that asked.
    trace_context: dict[str, str] | None = Field(
        default=None, sa_column=Column(JSONB, nullable=True)
    )


class Dispatcher(Protocol):
    """Whoever hands committed rows to the queue (`app.core.jobs.JobDispatcher`)."""

    def committed(self, outbox_id: uuid.UUID, job_name: str) -> None: ...


DISPATCHER_KEY = "outbox.dispatcher"

# The statements of every job-writing request, built once (no per-call construction, hashing
# or compilation on the response path).
_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
# Held until the transaction's next batch (`defer`): a job-writing request pays no round trip
# of its own for it.
_INSERT = DeferredInsert(
    "outbox",
    (
        "INSERT INTO outbox (id, job_name, payload, trace_context, created_at) "
        "VALUES (:id, :job_name, CAST(:payload AS jsonb), CAST(:trace_context AS jsonb), "
        ":created_at)",
    ),
)
_COMPLETE = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("outbox_id"), _OUTBOX.c.sent_at.is_(None))
    .values(sent_at=func.now())
)


def _json(payload: dict[str, Any]) -> str:
    """The payload as the JSON text of its JSONB column (checked: it must come back as is)."""
    for key in payload:
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            # They become the job's keyword arguments; ARQ keeps `_`-names for its own options.
            raise ValueError(f"job payload key {key!r} is not a public identifier")
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job payload must be JSON-serialisable: {exc}") from None


async def enqueue(session: AsyncSession, job_name: str, payload: dict[str, Any]) -> uuid.UUID:
    """Write an outbox row in the caller's transaction; handed to the queue after commit.

    The job runs as `job_name(ctx, **payload)` once the transaction commits, never if it rolls
    back. Returns the outbox id, which is also the ARQ job id (`ctx["job_id"]`).
    """
    data = _json(payload)
    outbox_id = uuid7()
    trace_context = tracing.current_context()
    defer(
        session,
        _INSERT,
        {
            "id": outbox_id,
            "job_name": job_name,
            "payload": data,
            # The request's W3C trace context (tracing on; None and free when off).
            "trace_context": None if trace_context is None else json.dumps(trace_context),
            "created_at": utcnow(),
        },
    )
    dispatcher: Dispatcher | None = session.info.get(DISPATCHER_KEY)
    if dispatcher is not None:

        async def hand_off() -> None:
            dispatcher.committed(outbox_id, job_name)

        after_commit(session, hand_off)
    log.debug("outbox.enqueued", outbox_id=str(outbox_id), job_name=job_name)
    return outbox_id


async def load(
    factory: async_sessionmaker[AsyncSession], outbox_id: uuid.UUID
) -> dict[str, Any] | None:
    """The payload of a row; None once the row is gone (pruned long after its job ran)."""
    async with session_scope(factory) as session:
        payload: dict[str, Any] | None = (
            await session.execute(
                select(col(OutboxMessage.payload)).where(col(OutboxMessage.id) == outbox_id)
            )
        ).scalar_one_or_none()
    return payload


class Loaded(NamedTuple):
    payload: dict[str, Any]
    trace_context: dict[str, str] | None


async def load_with_context(
    factory: async_sessionmaker[AsyncSession], outbox_id: uuid.UUID
) -> Loaded | None:
    """`load`, with the trace context the row was written in (the worker continues that trace)."""
    async with session_scope(factory) as session:
        row = (
            await session.execute(
                select(col(OutboxMessage.payload), col(OutboxMessage.trace_context)).where(
                    col(OutboxMessage.id) == outbox_id
                )
            )
        ).one_or_none()
    return None if row is None else Loaded(row[0], row[1])


async def complete(engine: AsyncEngine, outbox_id: uuid.UUID) -> None:
    """Mark one row handed off to the queue (the fast path, right after the request's commit).

    One statement in autocommit: atomic on its own, and one round trip instead of a session's
    BEGIN, UPDATE and COMMIT on the response path of every job-writing request.
    """
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(_COMPLETE, {"outbox_id": outbox_id})


async def scrub(session: AsyncSession, outbox_id: uuid.UUID, key: str) -> None:
    """Blank `key` of a row's payload (set it to `{}`), in the caller's transaction: a job that
    is done with a part that may hold a secret (an emailed token) keeps no copy of it."""
    if not key.isidentifier():
        raise ValueError(f"not a payload key: {key!r}")
    await session.execute(
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == outbox_id)
        .values(
            payload=func.jsonb_set(
                col(OutboxMessage.payload),
                cast(array([key]), ARRAY(Text)),
                literal_column("'{}'::jsonb"),
            )
        )
    )


# The relay's partial index (unsent rows by created_at) answers both at once.
_BACKLOG = text(
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
    "FROM outbox WHERE sent_at IS NULL"
)


async def backlog(engine: AsyncEngine) -> tuple[int, float]:
    """How many rows are not handed off yet, and the age in seconds of the oldest (metrics)."""
    async with engine.connect() as connection:
        unsent, lag = (await connection.execute(_BACKLOG)).one()
    return int(unsent), float(lag)


class Unsent(NamedTuple):
    id: uuid.UUID
    job_name: str


async def claim_unsent(session: AsyncSession, *, limit: int) -> list[Unsent]:
    """The oldest unsent rows, locked for the caller's transaction (the relay's batch).

    `FOR UPDATE SKIP LOCKED`: any number of relays run side by side without handing the same
    row twice or waiting for each other.
    """
    rows = await session.execute(
        select(col(OutboxMessage.id), col(OutboxMessage.job_name))
        .where(col(OutboxMessage.sent_at).is_(None))
        .order_by(col(OutboxMessage.created_at), col(OutboxMessage.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [Unsent(row.id, row.job_name) for row in rows]


async def complete_claimed(session: AsyncSession, outbox_ids: Sequence[uuid.UUID]) -> None:
    """Mark rows claimed by `claim_unsent` handed off, in the claiming transaction."""
    if outbox_ids:
        await session.execute(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(outbox_ids))
            .values(sent_at=func.now())
        )


async def prune(
    factory: async_sessionmaker[AsyncSession], *, older_than: timedelta, batch_size: int = 1000
) -> int:
    """Delete rows handed off longer ago than `older_than`, in small batches; returns how many.

    Unsent rows are never pruned, however old: they are work still owed.
    """
    cutoff = utcnow() - older_than
    total = 0
    while True:
        async with session_scope(factory) as session:
            batch = (
                select(col(OutboxMessage.id))
                .where(col(OutboxMessage.sent_at) < cutoff)
                .limit(batch_size)
                .scalar_subquery()
            )
            result = await session.execute(
                delete(OutboxMessage).where(col(OutboxMessage.id).in_(batch))
            )
        deleted: int = getattr(result, "rowcount", 0) or 0
        total += deleted
        if deleted < batch_size:
            break
    if total:
        log.info("outbox.pruned", count=total, cutoff=cutoff.isoformat())
    return total
