"""The WebSocket heartbeat (`app.core.websocket_protocol.Heartbeat`): a ping frame per connection
per interval from one timer per process, a connection that does not answer closed with 1011.

uvicorn serves a minimal ASGI app in the test's own event loop with the project's protocol and a
short interval; the clients are websockets' sans-I/O protocol over a raw socket, so that a test
sees every ping frame and decides whether the pong goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from app.core.websocket_protocol import (
    _HEARTBEATS,
    WEBSOCKET_PROTOCOL,
    Heartbeat,
    WebSocketProtocol,
)
from tests.in_loop import serving

INTERVAL = 0.4


async def _idle_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts a WebSocket and waits for it to end."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


class Client:
    """A WebSocket client that records when each ping arrived, and answers it or not."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.pings: list[float] = []
        self.close_code: int | None = None

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer, ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/")))
        client.protocol.send_request(client.protocol.connect())
        writer.write(b"".join(client.protocol.data_to_send()))
        while not any(isinstance(e, Response) for e in await client._read()):
            pass
        return client

    async def _read(self) -> list[Any]:
        data = await self.reader.read(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        return list(self.protocol.events_received())

    async def follow(
        self, seconds: float, *, answer: bool = True, pong: bytes | None = None
    ) -> None:
        """Read for `seconds` or until the server closes: note each ping, answer it as told
        (websockets queues the right pong by itself; `pong` sends that payload instead)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self.close_code is None:
                    events = await self._read()
                    outgoing = self.protocol.data_to_send()
                    for event in events:
                        if isinstance(event, Frame) and event.opcode is Opcode.PING:
                            self.pings.append(loop.time())
                        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                            close = self.protocol.close_rcvd
                            self.close_code = close.code if close else None
                    if answer:
                        self.writer.write(b"".join(outgoing))
                    elif pong is not None and events:
                        self.protocol.send_pong(pong)
                        self.writer.write(b"".join(self.protocol.data_to_send()))
                    if not events and self.protocol.close_expected():
                        return

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """uvicorn with the project's WebSocket protocol and a heartbeat every `INTERVAL` s."""
    async with serving(
        _idle_app,
        lifespan="off",
        ws=WEBSOCKET_PROTOCOL,
        ws_ping_interval=INTERVAL,
        ws_ping_timeout=INTERVAL,
    ) as port:
        yield port


def _heartbeat() -> Heartbeat:
    return Heartbeat.of(asyncio.get_running_loop(), INTERVAL)


async def test_an_answering_client_gets_a_ping_every_interval_and_stays(port: int) -> None:
    client = await Client.open(port)
    opened = asyncio.get_running_loop().time()
    try:
        await client.follow(INTERVAL * 4.5)
    finally:
        client.close()
    assert client.close_code is None
    assert 3 <= len(client.pings) <= 5, client.pings
    # The first within one interval of the handshake, then one per interval (API.md: at least
    # every 25 s; the slack is for a loaded machine).
    assert client.pings[0] - opened <= INTERVAL + 0.3
    gaps = [b - a for a, b in zip(client.pings, client.pings[1:], strict=False)]
    assert all(INTERVAL / 2 <= gap <= INTERVAL + 0.3 for gap in gaps), gaps


async def test_a_client_that_does_not_answer_is_closed_with_1011(port: int) -> None:
    client = await Client.open(port)
    try:
        await client.follow(INTERVAL * 5, answer=False)
    finally:
        client.close()
    assert client.close_code == 1011
    # Pinged once, failed at its next turn: not before, and not much later.
    assert len(client.pings) == 1


async def test_a_pong_with_another_payload_does_not_count(port: int) -> None:
    client = await Client.open(port)
    try:
        await client.follow(INTERVAL * 5, answer=False, pong=b"nope")
    finally:
        client.close()
    assert client.close_code == 1011
    assert len(client.pings) == 1


async def test_idle_connections_add_no_timer_of_their_own(port: int) -> None:
    loop = asyncio.get_running_loop()

    def timers() -> int:
        scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
        return sum(1 for handle in scheduled if not handle.cancelled())

    clients = [await Client.open(port)]  # the first one starts the process's heartbeat
    await asyncio.sleep(0.05)
    before = timers()
    clients += [await Client.open(port) for _ in range(10)]
    await asyncio.sleep(0.05)
    try:
        # uvicorn's own keepalive scheduled each connection's next ping: 10 more timers. One
        # of slack: the server's and the heartbeat's timers may be between two runs.
        assert timers() <= before + 1
        wheel = _heartbeat()
        assert wheel.size == 11
    finally:
        for client in clients:
            client.close()
    for _ in range(100):
        if not wheel.size:
            break
        await asyncio.sleep(0.02)
    # The last connection gone, the heartbeat's timer is gone too, and the loop forgot it.
    assert wheel.size == 0
    assert wheel._timer is None
    assert wheel not in _HEARTBEATS.get(loop, {}).values()


class _Protocol:
    """Stands in for a connection in the heartbeat's slots."""

    def __init__(self) -> None:
        self.beats = 0

    def heartbeat(self) -> None:
        self.beats += 1


async def test_connections_opened_together_are_spread_over_the_interval() -> None:
    wheel = Heartbeat(asyncio.get_running_loop(), 20.0)
    members: list[tuple[Any, int]] = []
    try:
        for _ in range(2000):
            protocol: Any = _Protocol()
            members.append((protocol, wheel.add(protocol)))
        occupancy = [len(slot) for slot in wheel.slots]
        assert len(occupancy) == 200
        assert sum(occupancy) == wheel.size == 2000
        # 10 per slot on average: no slot gets a crowd, and nearly all get some.
        assert max(occupancy) <= 30
        assert sum(1 for n in occupancy if n) >= 190
    finally:
        for protocol, slot in members:
            wheel.discard(protocol, slot)
    assert wheel.size == 0
    assert wheel._timer is None


async def test_each_visit_beats_one_whole_slot_and_every_slot_has_its_turn() -> None:
    wheel = Heartbeat(asyncio.get_running_loop(), 0.3)
    assert len(wheel.slots) == 3
    protocols: list[Any] = [_Protocol() for _ in range(30)]
    slots = [wheel.add(p) for p in protocols]
    try:
        async with asyncio.timeout(10):
            while min(p.beats for p in protocols) < 2:  # noqa: ASYNC110 (plain counters)
                await asyncio.sleep(0.01)
        # Two turns: every connection beaten twice (a third visit may have begun), and the
        # connections of one slot always together.
        assert {p.beats for p in protocols} <= {2, 3}
        for slot in range(3):
            assert len({p.beats for p, s in zip(protocols, slots, strict=True) if s == slot}) <= 1
    finally:
        for protocol, slot in zip(protocols, slots, strict=True):
            wheel.discard(protocol, slot)


class _Broken(_Protocol):
    def heartbeat(self) -> None:
        raise RuntimeError("a connection in a state nobody foresaw")


async def test_a_connection_that_fails_its_turn_is_dropped_and_the_others_keep_beating() -> None:
    wheel = Heartbeat(asyncio.get_running_loop(), 0.1)
    assert len(wheel.slots) == 1
    healthy: Any = _Protocol()
    broken: Any = _Broken()
    slots = [wheel.add(healthy), wheel.add(broken)]
    try:
        async with asyncio.timeout(10):
            while healthy.beats < 3:  # noqa: ASYNC110 (a plain counter)
                await asyncio.sleep(0.01)
        assert wheel.size == 1
        assert list(wheel.slots[0]) == [healthy]
    finally:
        wheel.discard(healthy, slots[0])
        wheel.discard(broken, slots[1])
    assert wheel.size == 0


def test_the_protocol_replaces_uvicorns_keepalive_entry_points() -> None:
    """uvicorn calls these; an upgrade that renames them would silently bring its timers back."""
    import inspect

    from uvicorn.protocols.websockets import websockets_sansio_impl

    source = inspect.getsource(websockets_sansio_impl)
    for name in ("start_keepalive", "stop_keepalive", "handle_pong"):
        assert f"self.{name}(" in source, name
        assert name in WebSocketProtocol.__dict__, name
    assert "def keepalive_timeout(self)" in source
