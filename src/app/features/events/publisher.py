"""Publishing events: recorded with the change, relayed to the streams after the commit.

`record()` writes the event to the outbox (`EventOutbox`) in the caller's transaction. Once that
transaction has committed, the event is published to the streams at once, off the response path
(an after-commit callback starts it). If that does not happen (the process died, Redis was away
for a moment), the row stays unrelayed and the relay loop of any server process publishes it a
second or two later; the store's script publishes a row at most once whichever path gets there
first. A rolled-back transaction takes its row with it: no event ever reports a change that did
not happen.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col

from app.core.database import DeferredInsert, after_commit, defer, session_scope, utcnow, uuid7
from app.core.logging import get_logger
from app.features.events import metrics
from app.features.events.audience import OrderLike, order_audiences
from app.features.events.models import EventOutbox
from app.features.events.store import REDIS_DOWN, EventStore

log = get_logger(__name__)

_RELAY_KEY = "events.relay"
_TABLE: Table = EventOutbox.__table__  # type: ignore[attr-defined]
# Held until the transaction's next batch (`defer`): no round trip of its own.
_INSERT = DeferredInsert(
    "event_outbox",
    (
        "INSERT INTO event_outbox (id, name, audiences, data, created_at) "
        "VALUES (:id, :name, CAST(:audiences AS varchar[]), CAST(:data AS jsonb), :created_at)",
    ),
)
_MARK_RELAYED = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("row_id"), _TABLE.c.relayed_at.is_(None))
    .values(relayed_at=func.now(), stream_id=bindparam("stream_id"))
)
# Rows the after-commit path normally publishes within milliseconds are left to it this long.
_RELAY_GRACE = timedelta(seconds=1)
# Relayed rows are kept a day (for audits), far longer than any stream keeps them.
_KEEP_RELAYED = timedelta(days=1)


def format_at(moment: datetime) -> str:
    """RFC 3339 in UTC, as the event's `at`."""
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class PendingEvent:
    id: uuid.UUID
    name: str
    data: str  # JSON
    at: str
    audiences: tuple[str, ...]


class Relay:
    """Moves committed events from the outbox to the streams (one per server process)."""

    def __init__(
        self, store: EventStore, session_factory: async_sessionmaker[AsyncSession]
    ) -> None:
        self.store = store
        self.session_factory = session_factory
        self._inflight: set[asyncio.Task[None]] = set()

    def install(self, factory: async_sessionmaker[AsyncSession]) -> None:
        """Let every session of `factory` hand its committed events here."""
        info = dict(factory.kw.get("info") or {})
        info[_RELAY_KEY] = self
        factory.configure(info=info)

    def committed(self, event: PendingEvent) -> None:
        """Publish a committed event now, without holding up the response that committed it."""
        task = asyncio.create_task(self._publish_committed(event))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _publish_committed(self, event: PendingEvent) -> None:
        try:
            stream_id = await self._publish(event)
        except REDIS_DOWN as exc:
            log.warning("events.publish_deferred", event_id=str(event.id), error=type(exc).__name__)
            return
        metrics.PUBLISHED.labels("commit").inc()
        log.info("events.published", name=event.name, stream_id=stream_id, pid=os.getpid())
        engine: AsyncEngine = self.session_factory.kw["bind"]
        try:
            async with engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(
                    _MARK_RELAYED, {"row_id": event.id, "stream_id": stream_id}
                )
        except Exception as exc:  # the relay loop will find it published already
            log.warning("events.mark_failed", event_id=str(event.id), error=type(exc).__name__)

    async def _publish(self, event: PendingEvent) -> str:
        return await self.store.publish(
            outbox_id=str(event.id),
            name=event.name,
            data=event.data,
            at=event.at,
            audiences=event.audiences,
        )

    async def drain(self, seconds: float = 2.0) -> None:
        """Let in-flight publications finish (at shutdown); the relay loop covers the rest."""
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=seconds)

    async def relay_pending(self, *, batch_size: int = 100) -> int:
        """Publish committed events that the after-commit path did not, oldest first.

        `FOR UPDATE SKIP LOCKED`: the relays of several processes share the work without
        waiting for each other. A Redis failure ends the pass; the next one carries on.
        """
        total = 0
        while True:
            failed = False
            async with session_scope(self.session_factory) as session:
                rows = (
                    await session.execute(
                        select(_TABLE)
                        .where(
                            _TABLE.c.relayed_at.is_(None),
                            _TABLE.c.created_at < func.now() - _RELAY_GRACE,
                        )
                        .order_by(_TABLE.c.created_at, _TABLE.c.id)
                        .limit(batch_size)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                for row in rows:
                    event = PendingEvent(
                        id=row.id,
                        name=row.name,
                        data=json.dumps(row.data, separators=(",", ":")),
                        at=format_at(row.created_at),
                        audiences=tuple(row.audiences),
                    )
                    try:
                        stream_id = await self._publish(event)
                    except REDIS_DOWN as exc:
                        log.warning("events.relay_interrupted", error=type(exc).__name__)
                        failed = True
                        break
                    await session.execute(_MARK_RELAYED, {"row_id": row.id, "stream_id": stream_id})
                    total += 1
            if failed or len(rows) < batch_size:
                break
        if total:
            metrics.PUBLISHED.labels("relay").inc(total)
            log.info("events.relayed", count=total)
        return total

    async def prune(self, *, batch_size: int = 1000) -> int:
        cutoff = utcnow() - _KEEP_RELAYED
        async with session_scope(self.session_factory) as session:
            batch = (
                select(col(EventOutbox.id))
                .where(col(EventOutbox.relayed_at) < cutoff)
                .limit(batch_size)
                .scalar_subquery()
            )
            result = await session.execute(
                delete(EventOutbox).where(col(EventOutbox.id).in_(batch))
            )
        deleted: int = getattr(result, "rowcount", 0) or 0
        return deleted

    async def run(self, interval: float, running: Callable[[], bool]) -> None:
        """The relay loop: every `interval`, publish what is owed; now and then, prune."""
        passes = 0
        while running():
            await asyncio.sleep(interval)
            try:
                await self.relay_pending()
                passes += 1
                if passes % 600 == 1:
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: try again next time
                log.warning("events.relay_failed", error=type(exc).__name__)


async def record(session: AsyncSession, name: str, data: bytes, audiences: list[str]) -> uuid.UUID:
    """Write an event (`data`: its JSON) in the caller's transaction; it is published once that
    transaction commits, never if it rolls back."""
    event_id = uuid7()
    moment = utcnow()
    text = data.decode()
    defer(
        session,
        _INSERT,
        {"id": event_id, "name": name, "audiences": audiences, "data": text, "created_at": moment},
    )
    relay: Relay | None = session.info.get(_RELAY_KEY)
    if relay is not None:
        pending = PendingEvent(
            id=event_id,
            name=name,
            data=text,
            at=format_at(moment),
            audiences=tuple(audiences),
        )

        async def publish() -> None:
            relay.committed(pending)

        after_commit(session, publish)
    return event_id


async def order_event(session: AsyncSession, name: str, order: OrderLike, data: bytes) -> uuid.UUID:
    """Record an order's event (`order.created`, `order.status_changed`) with the order as it
    now is (`data`: its OrderOut JSON), for its owner, its organization's members and the
    admins. What the orders feature records its events with (`OrderService(events=...)`): the
    app hands it in, orders do not import the streams built on them."""
    return await record(session, name, data, order_audiences(order))
