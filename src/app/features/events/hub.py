"""One process's share of the event streams: its connections, one stream reader, the fan-out.

Each server process runs one `Hub`. Its reader follows the admins' stream (which holds every
event, with the event's audiences) with one blocking XREAD at a time, whatever the number of
connections, and hands each event to the connections of the process that listen to one of its
audiences, through a bounded queue per connection. A second loop re-checks every connection's
session, token and memberships every few seconds (in bulk: two round trips for the whole
process), closing the ones whose session ended and updating what the others listen to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from types import FrameType
from typing import Any, TypeVar

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.core.logging import get_logger
from app.core.reads import ReadConnection
from app.features.events import metrics
from app.features.events.audience import viewer_audiences
from app.features.events.store import ALL_STREAM, REDIS_DOWN, Event, StreamId, event_from_entry
from app.features.users.liveness import (
    AccessMarks,
    LoginSessionRef,
    access_changes,
    check_login_sessions,
)
from app.features.users.models import Role

log = get_logger(__name__)

# Close codes (WebSocket; an SSE response simply ends).
CLOSE_UNAUTHORIZED = 4401  # no, late or invalid auth; session revoked; token expired
CLOSE_API_KEY = 4403  # API keys may not open event streams
CLOSE_SLOW = 1008  # too many live events queued behind the connection
CLOSE_RESTART = 1012  # the server is shutting down: reconnect
CLOSE_TRY_LATER = 1013  # sessions cannot be checked (Redis or the database is away)
CLIENT_GONE = 1000  # the client went away (internal: nothing is sent)

_Message = TypeVar("_Message")

# Streams re-checked per batch (sessions, accounts, memberships), the event loop served between.
_CHECK_BATCH = 50
_CHECK_PAUSE_SECONDS = 0.015

# How long the reader blocks in one XREAD; its socket waits a little longer.
_READ_BLOCK_MS = 1000


# A connection with nothing queued holds this (shared) empty tuple, not a deque of its own: an
# empty deque costs ~600 bytes, and most connections are idle most of the time.
_NOTHING_QUEUED: tuple[()] = ()


class Connection:
    """One client's stream: who it is, what it listens to, and its bounded queue.

    An idle connection costs one task, the one that serves it (`pump`), and nothing that waits
    by itself: a WebSocket's pump waits for the client's next message (`receive`), and an event
    or a close offered meanwhile interrupts that wait (by cancelling it, then taking the
    cancellation back); an SSE pump waits on a future made for that one wait (`next`).
    """

    __slots__ = (
        "audiences",
        "cancelled_send",
        "close_code",
        "connected_at",
        "expires_at",
        "interrupted",
        "is_admin",
        "limit",
        "pump",
        "queue",
        "receiving",
        "sending",
        "sent_after",
        "session_id",
        "token_version",
        "transport",
        "user_id",
        "waiter",
    )

    def __init__(
        self,
        *,
        transport: str,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        token_version: int,
        expires_at: int,
        is_admin: bool,
        audiences: frozenset[str],
        limit: int,
    ) -> None:
        self.transport = transport
        self.user_id = user_id
        self.session_id = session_id
        self.token_version = token_version
        self.expires_at = expires_at
        self.is_admin = is_admin
        self.audiences = audiences
        self.limit = limit
        self.queue: deque[Event] | tuple[()] = _NOTHING_QUEUED
        self.close_code: int | None = None
        # Events up to this id were sent already (by the replay): live copies are skipped.
        self.sent_after: StreamId | None = None
        self.connected_at = time.monotonic()
        # The task that sends to the client, and what it is waiting for right now: the client
        # (`sending`: a slow reader; closing the stream then interrupts that wait), the client's
        # next message (`receiving`: an event or a close interrupts it) or the future `waiter`.
        self.pump: asyncio.Task[Any] | None = None
        self.sending = False
        self.cancelled_send = False
        self.receiving = False
        self.interrupted = False
        self.waiter: asyncio.Future[bool] | None = None

    def offer(self, event: Event) -> None:
        if self.close_code is not None:
            return
        if len(self.queue) >= self.limit:
            metrics.DROPPED.labels(self.transport).inc(len(self.queue) + 1)
            metrics.SLOW_DISCONNECTS.labels(self.transport).inc()
            log.warning(
                "events.slow_client_dropped",
                transport=self.transport,
                user_id=str(self.user_id),
                queued=len(self.queue),
            )
            self.close(CLOSE_SLOW)
            return
        if not self.queue:
            self.queue = deque()
        self.queue.append(event)
        self._wake()

    def close(self, code: int) -> None:
        """End the stream with `code` (the first reason wins); its queue is dropped."""
        if self.close_code is None:
            self.close_code = code
            self.queue = _NOTHING_QUEUED
            self._wake()
            if self.sending and self.pump is not None and code != CLIENT_GONE:
                self.cancelled_send = True
                self.pump.cancel()

    def _wake(self) -> None:
        """Interrupt the pump's wait, if it waits: there is something to send, or to close."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)
        elif self.receiving and not self.interrupted and self.pump is not None:
            self.interrupted = True
            self.pump.cancel()

    async def send(self, sending: Awaitable[None]) -> bool:
        """Await one send to the client; False when the stream was closed meanwhile (the
        client read too slowly), True once sent."""
        self.sending = True
        try:
            await sending
            return True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.cancelled_send and task is not None:
                self.cancelled_send = False
                task.uncancel()
                return False
            raise
        finally:
            self.sending = False

    def pop(self) -> Event | None:
        """The next queued live event not sent yet, if any (never waits)."""
        queue = self.queue
        while queue:
            event = queue.popleft()
            if not queue:
                self.queue = _NOTHING_QUEUED  # the deque goes: an idle connection keeps none
            if self.sent_after is not None and event.key <= self.sent_after:
                continue
            return event
        return None

    async def receive(self, receive: Callable[[], Awaitable[_Message]]) -> _Message | None:
        """The client's next message (by `receive`), or None as soon as an event or a close is
        offered (then nothing is lost: the message not received yet stays with the server).

        The pump itself waits, no other task: the interruption is a cancellation of the pump
        that is taken back (`uncancel`); a cancellation from anywhere else still goes through.
        """
        if self.close_code is not None or self.queue:
            return None
        task = asyncio.current_task()
        assert task is not None
        assert task is self.pump
        self.receiving = True
        try:
            return await receive()
        except asyncio.CancelledError:
            if self.interrupted and task.uncancel() == 0:
                return None
            raise
        finally:
            self.receiving = False
            self.interrupted = False

    async def next(self, wait: float) -> Event | None:
        """The next live event to send; None when the stream is closing or after `wait` seconds (for
        a heartbeat: check `close_code`)."""
        loop = asyncio.get_running_loop()
        while True:
            if self.close_code is not None:
                return None
            event = self.pop()
            if event is not None or wait <= 0:
                return event
            waiter = self.waiter = loop.create_future()
            timer = loop.call_later(wait, _time_out, waiter)
            try:
                timed_out = await waiter
            finally:
                timer.cancel()
                self.waiter = None
            if timed_out:
                return None


def _time_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


class Hub:
    def __init__(
        self,
        settings: Settings,
        *,
        redis: Redis,
        engine: AsyncEngine,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.engine = engine
        self.connections: set[Connection] = set()
        self.by_audience: dict[str, set[Connection]] = {}
        self.closing = False
        self.reader_position: str | None = None
        self._reader_redis: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._restore_signals: list[tuple[int, Any]] = []
        self._last_check_ok = time.monotonic()
        # Where revocations and account changes stood at the last look (None: re-check every
        # stream at the next), the streams registered since (checked at the next look), and
        # the rolling re-check: a snapshot of the streams, re-read a slice per look.
        self._marks: AccessMarks | None = None
        self._unchecked: set[Connection] = set()
        self._rolling: list[Connection] = []
        self._rolling_next = 0
        self._rolling_credit = 0.0

    # Life cycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return not self.closing

    async def start(self, *background: Callable[[], Any]) -> None:
        self._reader_redis = Redis.from_url(
            self.settings.redis_url,
            socket_timeout=_READ_BLOCK_MS / 1000 + self.settings.redis_timeout_seconds,
            socket_connect_timeout=self.settings.redis_timeout_seconds,
        )
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="events.reader"),
            asyncio.create_task(self._check_loop(), name="events.checker"),
            *(asyncio.create_task(job(), name="events.background") for job in background),
        ]
        self._hook_shutdown_signals()

    async def stop(self) -> None:
        self.begin_shutdown()
        self._unhook_shutdown_signals()
        # Every loop also checks `running`: redis-py swallows a cancellation that arrives while
        # it connects, so a cancelled loop may only notice the flag a round later.
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_READ_BLOCK_MS / 1000 + 1)
        if self._reader_redis is not None:
            await self._reader_redis.aclose()
        for transport in ("ws", "sse"):
            metrics.CONNECTIONS.labels(transport).set(0)

    def begin_shutdown(self) -> None:
        """Close every stream with 1012 (SSE: end it) and refuse new ones."""
        if self.closing:
            return
        self.closing = True
        count = len(self.connections)
        for connection in list(self.connections):
            connection.close(CLOSE_RESTART)
        log.info("events.shutdown", connections=count, pid=os.getpid())

    def _hook_shutdown_signals(self) -> None:
        """Under uvicorn, close the streams as soon as SIGTERM/SIGINT arrives.

        uvicorn closes WebSockets with 1012 itself, but waits for streaming HTTP responses (SSE)
        until the graceful-shutdown timeout and then cuts them: ending them at the signal lets
        the shutdown finish early and cleanly. Only uvicorn's own handlers are wrapped (never a
        test runner's), and the originals are put back on stop.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                original = signal.getsignal(signum)
            except ValueError:  # pragma: no cover - not the main thread
                return
            owner = getattr(original, "__self__", None)
            if owner is None or not type(owner).__module__.startswith("uvicorn"):
                continue
            loop = asyncio.get_running_loop()

            def handler(
                sig: int,
                frame: FrameType | None,
                original: Any = original,
                loop: asyncio.AbstractEventLoop = loop,
            ) -> None:
                loop.call_soon_threadsafe(self.begin_shutdown)
                original(sig, frame)

            try:
                signal.signal(signum, handler)
            except ValueError:  # pragma: no cover - not the main thread
                return
            self._restore_signals.append((signum, original))

    def _unhook_shutdown_signals(self) -> None:
        for signum, original in self._restore_signals:
            with contextlib.suppress(ValueError):
                signal.signal(signum, original)
        self._restore_signals.clear()

    # Connections ----------------------------------------------------------------------------

    def register(self, connection: Connection) -> None:
        if self.closing:
            connection.close(CLOSE_RESTART)
            return
        self.connections.add(connection)
        self._unchecked.add(connection)
        for audience in connection.audiences:
            self.by_audience.setdefault(audience, set()).add(connection)
        metrics.CONNECTIONS.labels(connection.transport).inc()

    def unregister(self, connection: Connection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        self._unchecked.discard(connection)
        self._unindex(connection, connection.audiences)
        metrics.CONNECTIONS.labels(connection.transport).dec()

    def _unindex(self, connection: Connection, audiences: Iterable[str]) -> None:
        for audience in audiences:
            members = self.by_audience.get(audience)
            if members is not None:
                members.discard(connection)
                if not members:
                    del self.by_audience[audience]

    def listen_to(self, connection: Connection, audiences: frozenset[str]) -> None:
        """Change what a connection listens to (a membership began or ended)."""
        if audiences == connection.audiences or connection not in self.connections:
            connection.audiences = audiences
            return
        self._unindex(connection, connection.audiences - audiences)
        for audience in audiences - connection.audiences:
            self.by_audience.setdefault(audience, set()).add(connection)
        connection.audiences = audiences

    def dispatch(self, event: Event) -> None:
        """Hand an event to every connection of this process that may see it, and none other."""
        targets: set[Connection] = set()
        for audience in (*event.audiences, "admins"):
            members = self.by_audience.get(audience)
            if members:
                targets |= members
        for connection in targets:
            connection.offer(event)

    # The stream reader ----------------------------------------------------------------------

    async def _start_position(self, redis: Redis) -> str:
        try:
            info = await redis.xinfo_stream(ALL_STREAM)
        except REDIS_DOWN as exc:
            if "no such key" in str(exc).lower():
                return "0-0"
            raise
        last = info["last-generated-id"]
        return last.decode() if isinstance(last, bytes) else str(last)

    async def _read_loop(self) -> None:
        redis = self._reader_redis
        assert redis is not None
        delay = 0.1
        while self.running:
            try:
                if self.reader_position is None:
                    self.reader_position = await self._start_position(redis)
                response = await redis.xread(
                    {ALL_STREAM: self.reader_position}, count=500, block=_READ_BLOCK_MS
                )
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                log.warning("events.reader_failed", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.1
            for _stream, entries in response or ():
                for entry_id, fields in entries:
                    event = event_from_entry(entry_id, fields)
                    if event is None:
                        continue
                    self.reader_position = event.id
                    self.dispatch(event)

    # Re-checking sessions and memberships ---------------------------------------------------

    async def _check_loop(self) -> None:
        interval = self.settings.events_recheck_seconds
        while self.running:
            await asyncio.sleep(interval)
            try:
                await self.check_connections()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("events.check_failed")

    async def check_connections(self) -> None:
        """Close streams whose token expired or whose session ended; update what the others
        listen to. When the check itself cannot run for longer than allowed (Redis or the
        database away), close them with 1013: a revoked session must not keep receiving.

        Each look (every `events_recheck_seconds`) checks expiry in memory and asks
        `access_changes` what changed since the last look. Streams of the sessions denied since
        are closed at once. Every stream is re-read (session, account, memberships) only when
        that is not the whole story: an account or a membership changed, the denials cannot be
        told one by one, or the last look failed. Otherwise only the streams opened
        since the last look are, and a slice of the others, so that each is re-read at least
        every `events_full_recheck_seconds` whatever happened (a change made without the marks,
        by an older release during a rolling deploy). Re-reading 5,000 streams every 2 s held
        a worker's event loop for 90 ms each time (bench.realtime ws_idle).
        """
        now = time.time()
        for connection in list(self.connections):
            if connection.expires_at <= now:
                connection.close(CLOSE_UNAUTHORIZED)
        if not any(c.close_code is None for c in self.connections):
            self._unchecked.clear()
            self._last_check_ok = time.monotonic()
            return
        reads = ReadConnection(self.engine)
        try:
            changes = await access_changes(self.redis, reads, self._marks)
            if changes.denied:
                for connection in list(self.connections):
                    if connection.session_id in changes.denied:
                        connection.close(CLOSE_UNAUTHORIZED)
            # Taken with no await in between: a stream registered from here on is left for
            # the next look, which finds it in `_unchecked`.
            if not changes.complete:
                targets: Iterable[Connection] = self.connections
                self._rolling, self._rolling_next, self._rolling_credit = [], 0, 0.0
            else:
                targets = [*self._unchecked, *self._rolling_slice()]
            live = list({c: None for c in targets if c.close_code is None})
            self._unchecked = set()
            self._marks = None  # until this look has done what it found
            await self._recheck(reads, live)
            self._marks = changes.marks
        except Exception as exc:  # Redis or the database away, most likely: see below
            self._marks = None  # what changed meanwhile may not all be told: re-read everything
            return self._check_failed(exc)
        finally:
            await reads.close()
        self._last_check_ok = time.monotonic()

    def _rolling_slice(self) -> list[Connection]:
        """The next streams of the rolling re-check: each look takes its share of a snapshot
        (looks per full re-check: `events_full_recheck_seconds / events_recheck_seconds`), so
        that the whole snapshot is re-read within that time in small, evenly spread parts."""
        if self._rolling_next >= len(self._rolling):
            self._rolling, self._rolling_next = list(self.connections), 0
        share = self.settings.events_recheck_seconds / self.settings.events_full_recheck_seconds
        self._rolling_credit += len(self._rolling) * min(1.0, share)
        take = int(self._rolling_credit + 1e-9)
        self._rolling_credit -= take
        part = self._rolling[self._rolling_next : self._rolling_next + take]
        self._rolling_next += take
        return [c for c in part if c in self.connections]

    async def _recheck(self, reads: ReadConnection, live: list[Connection]) -> None:
        for start in range(0, len(live), _CHECK_BATCH):
            if start:
                # Thousands of streams are checked a batch at a time, with a pause in
                # between in which the process serves its requests: one bulk check of
                # 5,000 made a /health p99 of 372 ms out of 3 ms (bench.realtime ws_idle).
                await asyncio.sleep(_CHECK_PAUSE_SECONDS)
            batch = live[start : start + _CHECK_BATCH]
            refs = [LoginSessionRef(c.session_id, c.user_id, c.token_version) for c in batch]
            liveness = await check_login_sessions(self.redis, reads, refs)
            viewers = {uid: role == Role.admin for uid, role in liveness.roles.items()}
            audiences = await viewer_audiences(reads, viewers)
            for connection in batch:
                if connection.session_id in liveness.ended:
                    connection.close(CLOSE_UNAUTHORIZED)
                    continue
                current = audiences.get(connection.user_id)
                if current is not None:
                    self.listen_to(connection, current)

    def _check_failed(self, exc: BaseException) -> None:
        down_for = time.monotonic() - self._last_check_ok
        log.warning("events.check_unavailable", error=type(exc).__name__, down_for=down_for)
        # Within the 5 s of API.md, counting the next check's interval.
        if down_for + self.settings.events_recheck_seconds > 5.0:
            for connection in list(self.connections):
                connection.close(CLOSE_TRY_LATER)
