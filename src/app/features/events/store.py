"""The event store: one Redis Stream per audience, ids shared across streams.

Publishing (one Lua script, atomic) appends the event to the admins' stream, which holds every
event and gives it its id (`<ms>-<seq>`), then appends it under that same id to the stream of
each other audience (`user:<id>`, `org:<id>`). Ids therefore increase across all streams
together, so a connection that listens to several audiences can merge their streams into one
ordered sequence, and one id names one event everywhere. The script is idempotent per outbox row
(a marker key remembers the id it got), so the after-commit path and the relay loop may both
try to publish a row without ever producing it twice.

Streams keep at least `events_retention_seconds` of history: each append trims entries older than
that (MINID, approximately: whole macro nodes, so a little more is kept) and the operator's cap
(MAXLEN, `events_stream_max_length`) may cut further; the newest id it cut from each stream is
remembered, so that a resume from before it gets a reset rather than a gap. Audience streams
that receive nothing expire after the retention period.
"""

from __future__ import annotations

import asyncio
import heapq
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from app.features.events.audience import ADMINS

# A hash tag keeps every stream of the feature in one slot of a Redis Cluster: the publishing
# script touches several of them at once.
KEY_PREFIX = "events:{s}:"
ALL_STREAM = KEY_PREFIX + ADMINS
_PUBLISHED_PREFIX = KEY_PREFIX + "published:"
# Per stream, the newest id that the operator's cap cut from it.
CUT_KEY = KEY_PREFIX + "cut"

# What a Redis outage looks like from redis-py: refused, reset, timed out.
REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)

_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")

StreamId = tuple[int, int]

_PUBLISH = """
local done = redis.call('GET', KEYS[1])
if done then return done end
local cap = tonumber(ARGV[2])
local function trim(key, minid)
  redis.call('XTRIM', key, 'MINID', '~', minid)
  -- The operator's cap, exactly, remembering the newest id it cut: a client resuming from an
  -- older id would miss events, and gets a reset instead.
  local over = redis.call('XLEN', key) - cap
  if over > 0 then
    local gone = redis.call('XRANGE', key, '-', '+', 'COUNT', over)
    redis.call('HSET', KEYS[2], key, gone[#gone][1])
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
    redis.call('XTRIM', key, 'MAXLEN', cap)
  end
end
local fields = {'e', ARGV[4], 'd', ARGV[5], 'at', ARGV[6], 'a', ARGV[7]}
local id = redis.call('XADD', KEYS[3], '*', unpack(fields))
local ms = tonumber(string.match(id, '^(%d+)'))
local minid = tostring(ms - tonumber(ARGV[1]))
trim(KEYS[3], minid)
for i = 4, #KEYS do
  local added = redis.pcall('XADD', KEYS[i], id, unpack(fields))
  if type(added) == 'table' and added.err then
    -- This stream is ahead of the admins' one (only after the latter was lost): start it again.
    redis.call('DEL', KEYS[i])
    redis.call('XADD', KEYS[i], id, unpack(fields))
  end
  trim(KEYS[i], minid)
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
redis.call('SET', KEYS[1], id, 'PX', ARGV[3])
return id
"""


def stream_key(audience: str) -> str:
    return KEY_PREFIX + audience


def parse_id(value: str | bytes | None) -> StreamId | None:
    """A stream id as a comparable pair, or None when it is not one."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    match = _ID.match(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def format_id(value: StreamId) -> str:
    return f"{value[0]}-{value[1]}"


@dataclass(slots=True)
class Event:
    """One event as read from a stream; its wire forms are built once and shared by every
    connection that receives it."""

    id: str
    key: StreamId
    name: str
    data: str  # the OrderOut, JSON
    at: str
    audiences: tuple[str, ...]
    _text: str | None = field(default=None, repr=False)
    _sse: bytes | None = field(default=None, repr=False)

    def text(self) -> str:
        """The message object of API.md, as JSON."""
        if self._text is None:
            self._text = (
                f'{{"type":"event","id":"{self.id}","event":"{self.name}",'
                f'"data":{self.data},"at":"{self.at}"}}'
            )
        return self._text

    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = f"id: {self.id}\nevent: {self.name}\ndata: {self.text()}\n\n".encode()
        return self._sse


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def event_from_entry(entry_id: Any, fields: dict[Any, Any]) -> Event | None:
    text_id = _decode(entry_id)
    key = parse_id(text_id)
    if key is None:
        return None
    values = {_decode(name): _decode(value) for name, value in fields.items()}
    audiences = tuple(item for item in values.get("a", "").split(",") if item)
    return Event(
        id=text_id,
        key=key,
        name=values.get("e", ""),
        data=values.get("d", "null"),
        at=values.get("at", ""),
        audiences=audiences,
    )


@dataclass(frozen=True, slots=True)
class Replay:
    """What a resuming connection gets: the events after its id, or a reset to `reset_id`."""

    events: AsyncIterator[Event] | None
    reset_id: str | None


class EventStore:
    """Publishing to and reading from the streams, with the app's Redis client."""

    def __init__(self, redis: Redis, *, retention_seconds: int, max_length: int) -> None:
        self.redis = redis
        self.retention_ms = retention_seconds * 1000
        self.max_length = max_length
        self._publish = redis.register_script(_PUBLISH)

    async def publish(
        self, *, outbox_id: str, name: str, data: str, at: str, audiences: Sequence[str]
    ) -> str:
        """Append one event to its streams (once per outbox id); returns its id."""
        extra = [stream_key(audience) for audience in audiences if audience != ADMINS]
        result = await self._publish(
            keys=[_PUBLISHED_PREFIX + outbox_id, CUT_KEY, ALL_STREAM, *extra],
            args=[
                self.retention_ms,
                self.max_length,
                self.retention_ms,
                name,
                data,
                at,
                ",".join(audiences),
            ],
        )
        return _decode(result)

    async def newest_id(self) -> str:
        """The id of the newest event kept (what a reset points at); `0-0` when there is none."""
        try:
            info = await self.redis.xinfo_stream(ALL_STREAM)
        except ResponseError:  # no such key: nothing was ever published (or it all expired)
            return "0-0"
        return _decode(info["last-generated-id"])

    async def replay(self, audiences: Iterable[str], last_event_id: str) -> Replay:
        """The events after `last_event_id` that these audiences see, or a reset.

        A reset when the id is malformed, was never an event's id, or is older than what is
        kept for any of the audiences (trimmed by age or by the cap): then a gap could not be
        ruled out, and the client must refetch instead.
        """
        newest = await self.newest_id()
        after = parse_id(last_event_id)
        if after is None or not await self._is_kept(after, audiences):
            return Replay(events=None, reset_id=newest)
        streams = [stream_key(audience) for audience in sorted(audiences)]
        return Replay(events=self._merged(streams, after), reset_id=None)

    async def _is_kept(self, after: StreamId, audiences: Iterable[str]) -> bool:
        text = format_id(after)
        # It is an event's id: the admins' stream holds every event (trimming only ever
        # removes the oldest entries, so its presence also means nothing after it was trimmed).
        if not await self.redis.xrange(ALL_STREAM, text, text, count=1):
            return False
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        # Older than the retention: an audience stream may have been trimmed or expired past it.
        if after[0] < now_ms - self.retention_ms:
            return False
        streams = [stream_key(audience) for audience in audiences if audience != ADMINS]
        if streams:
            cuts: list[Any] = await self.redis.hmget(CUT_KEY, streams)  # type: ignore[misc]
            for cut in cuts:
                cut_id = parse_id(cut)
                if cut_id is not None and cut_id > after:
                    return False  # the cap cut entries after the client's id
        return True

    async def _merged(self, streams: list[str], after: StreamId) -> AsyncIterator[Event]:
        """The streams' entries after `after`, merged by id, each event once, read a page at a
        time as they are sent."""
        page = 100
        cursors = dict.fromkeys(streams, after)
        buffers: dict[str, list[Event]] = {}
        heap: list[tuple[StreamId, int, str]] = []
        order = {stream: index for index, stream in enumerate(streams)}

        async def refill(stream: str) -> None:
            entries = await self.redis.xrange(
                stream, f"({format_id(cursors[stream])}", "+", count=page
            )
            events = [e for e in (event_from_entry(i, f) for i, f in entries) if e is not None]
            buffers[stream] = events
            if events:
                cursors[stream] = events[-1].key
                heapq.heappush(heap, (events[0].key, order[stream], stream))

        for stream in streams:
            await refill(stream)
        last: StreamId = after
        while heap:
            _key, _, stream = heapq.heappop(heap)
            event = buffers[stream].pop(0)
            if buffers[stream]:
                heapq.heappush(heap, (buffers[stream][0].key, order[stream], stream))
            else:
                await refill(stream)
            if event.key > last:
                last = event.key
                yield event
