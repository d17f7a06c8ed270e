"""The event streams against a live `saas serve --workers 2`, real WebSocket and SSE clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.features.users.models import Role
from tests.conftest import UserFactory
from tests.integration.catalog import ProductFactory
from tests.integration.events.conftest import (
    ALLOWED_ORIGIN,
    LiveServer,
    Publisher,
    ServeFactory,
    open_ws,
    sse_events,
)

pytestmark = pytest.mark.slow

Mint = Callable[..., str]
MakePublisher = Callable[..., Publisher]


async def _events(ws: ClientConnection, count: int, *, within: float = 15) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while len(received) < count:
            received.append(json.loads(await ws.recv()))
    return received


async def _silent(ws: ClientConnection, seconds: float) -> None:
    """Nothing arrives on `ws` for `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            message = await ws.recv()
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {message!r}")


async def _close_code(ws: ClientConnection, *, within: float) -> int | None:
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


class TestDelivery:
    async def test_each_user_gets_their_events_on_every_process_and_nothing_else(
        self,
        live_server: ServeFactory,
        make_user: UserFactory,
        mint_token: Mint,
        publisher: MakePublisher,
    ) -> None:
        # Two single-process servers rather than one with two workers: which worker the kernel
        # hands a connection to is up to it, and on a quiet machine one may take them all.
        servers = [live_server(workers=1), live_server(workers=1)]
        alice, bob, admin = (
            await make_user(),
            await make_user(),
            await make_user(role=Role.admin),
        )
        # Each process holds some of each user's connections.
        alices = [await open_ws(servers[i % 2], mint_token(alice)) for i in range(6)]
        bobs = [await open_ws(servers[i % 2], mint_token(bob)) for i in range(3)]
        admins = [await open_ws(servers[i % 2], mint_token(admin)) for i in range(3)]
        for _ws, ready in alices + bobs + admins:
            assert ready["type"] == "ready"
        assert {ready["user_id"] for _, ready in alices} == {str(alice.id)}

        events = publisher()
        ids = [await events.order_event(alice.id) for _ in range(5)]
        for ws, _ in alices + admins:
            received = await _events(ws, 5)
            assert [message["id"] for message in received] == ids
            assert {message["type"] for message in received} == {"event"}
            assert {message["event"] for message in received} == {"order.created"}
            assert {message["data"]["user_id"] for message in received} == {str(alice.id)}
            assert all(message["at"].endswith("Z") for message in received)
        for ws, _ in bobs:
            await _silent(ws, 1.0)

        bob_id = await events.order_event(bob.id, name="order.status_changed")
        for ws, _ in bobs + admins:
            (message,) = await _events(ws, 1)
            assert message["id"] == bob_id
            assert message["event"] == "order.status_changed"
        for ws, _ in alices:
            await _silent(ws, 0.5)
        for ws, _ in alices + bobs + admins:
            await ws.close()
        pids = set()
        for server in servers:
            assert server.stop() is not None
            pids |= {
                line["pid"]
                for line in server.log_lines()
                if line.get("event") == "events.connected"
            }
        assert len(pids) == 2, "the connections did not spread over both processes"

    async def test_sse_carries_the_same_events_with_the_same_ids(
        self,
        live_server: ServeFactory,
        make_user: UserFactory,
        mint_token: Mint,
        publisher: MakePublisher,
    ) -> None:
        server = live_server()
        alice = await make_user()
        token = mint_token(alice)
        events = publisher()
        ws, _ = await open_ws(server, token)
        headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=20) as http,
            http.stream("GET", "/api/v1/events", headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            assert "content-encoding" not in response.headers
            assert response.headers["x-request-id"]
            ids = [await events.order_event(alice.id) for _ in range(3)]
            got: list[dict[str, str]] = []
            stream = sse_events(response)
            async with asyncio.timeout(15):
                async for item in stream:
                    if "comment" in item or "retry" in item:
                        continue
                    got.append(item)
                    if len(got) == 3:
                        break
        assert [item["id"] for item in got] == ids
        assert {item["event"] for item in got} == {"order.created"}
        payloads = [json.loads(item["data"]) for item in got]
        assert [payload["id"] for payload in payloads] == ids
        assert {payload["type"] for payload in payloads} == {"event"}
        over_ws = await _events(ws, 3)
        assert over_ws == payloads
        await ws.close()


class TestOrders:
    async def test_orders_changed_through_either_process_reach_the_owner_and_admins_everywhere(
        self,
        live_server: ServeFactory,
        make_user: UserFactory,
        make_product: ProductFactory,
        mint_token: Mint,
    ) -> None:
        servers = [live_server(workers=1), live_server(workers=1)]
        product = await make_product(stock=100, price_cents=250)
        alice, bob, admin = (
            await make_user(),
            await make_user(),
            await make_user(role=Role.admin),
        )
        alices = [await open_ws(servers[i % 2], mint_token(alice)) for i in range(4)]
        bobs = [await open_ws(servers[i % 2], mint_token(bob)) for i in range(2)]
        admins = [await open_ws(servers[i % 2], mint_token(admin)) for i in range(2)]
        headers = {"Authorization": f"Bearer {mint_token(alice)}"}
        bodies = []
        # The orders change through one process and the other in turn.
        for quantity in (1, 2, 3):
            async with httpx.AsyncClient(base_url=servers[quantity % 2].url, timeout=20) as http:
                response = await http.post(
                    "/api/v1/orders",
                    json={"items": [{"product_id": str(product.id), "quantity": quantity}]},
                    headers=headers,
                )
                assert response.status_code == 201, response.text
                bodies.append(response.json())
        async with httpx.AsyncClient(base_url=servers[0].url, timeout=20) as http:
            cancelled = await http.post(f"/api/v1/orders/{bodies[0]['id']}/cancel", headers=headers)
            assert cancelled.status_code == 200
        for ws, _ in alices + admins:
            received = await _events(ws, 4)
            assert [m["event"] for m in received] == ["order.created"] * 3 + [
                "order.status_changed"
            ]
            # The data is the order exactly as the API answered it.
            assert [m["data"] for m in received] == [*bodies, cancelled.json()]
            assert received[3]["data"]["status"] == "cancelled"
        for ws, _ in bobs:
            await _silent(ws, 1.0)
        for ws, _ in alices + bobs + admins:
            await ws.close()
        connected, published = set(), set()
        for server in servers:
            server.stop()
            lines = server.log_lines()
            connected |= {line["pid"] for line in lines if line.get("event") == "events.connected"}
            published |= {line["pid"] for line in lines if line.get("event") == "events.published"}
        # Connections on both processes got every event, whichever process committed it.
        assert len(connected) == 2
        assert published


class TestResume:
    async def test_websocket_resume_replays_without_gap_or_duplicate_over_100_events(
        self,
        live_server: ServeFactory,
        make_user: UserFactory,
        mint_token: Mint,
        publisher: MakePublisher,
    ) -> None:
        server = live_server()
        alice, bob = await make_user(), await make_user()
        events = publisher()
        published: list[str] = []

        async def publish_all() -> None:
            for number in range(100):
                published.append(await events.order_event(alice.id))
                if number % 7 == 0:
                    await events.order_event(bob.id)  # interleaved, never Alice's
                await asyncio.sleep(0.01)

        ws, _ = await open_ws(server, mint_token(alice))
        producer = asyncio.create_task(publish_all())
        first = await _events(ws, 30)
        await ws.close()
        # More events are published while Alice is away.
        await asyncio.sleep(0.3)
        ws, ready = await open_ws(server, mint_token(alice), last_event_id=first[-1]["id"])
        assert ready["type"] == "ready"
        await producer
        rest = await _events(ws, 70, within=30)
        await _silent(ws, 0.5)
        await ws.close()
        ids = [message["id"] for message in first + rest]
        assert ids == published
        assert {message["data"]["user_id"] for message in first + rest} == {str(alice.id)}

    async def test_sse_resumes_with_last_event_id(
        self,
        live_server: ServeFactory,
        make_user: UserFactory,
        mint_token: Mint,
        publisher: MakePublisher,
    ) -> None:
        server = live_server()
        alice = await make_user()
        token = mint_token(alice)
        events = publisher()
        ids = [await events.order_event(alice.id) for _ in range(10)]
        headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": ids[3]}
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=20) as http,
            http.stream("GET", "/api/v1/events", headers=headers) as response,
        ):
            assert response.status_code == 200
            got = []
            async with asyncio.timeout(15):
                async for item in sse_events(response):
                    if "id" in item:
                        got.append(item["id"])
                    if len(got) == 6:
                        break
        assert got == ids[4:]

    @pytest.mark.parametrize("last_event_id", ["not-an-id", "1-0", "99999999999999-0"])
    async def test_an_unknown_or_malformed_id_gets_a_reset_then_live_events(
        self,
        live_server: ServeFactory,
        make_user: UserFactory,
        mint_token: Mint,
        publisher: MakePublisher,
        last_event_id: str,
    ) -> None:
        server = live_server(workers=1)
        alice = await make_user()
        events = publisher()
        newest = await events.order_event(alice.id)
        ws, ready = await open_ws(server, mint_token(alice), last_event_id=last_event_id)
        assert ready["type"] == "ready"
        (reset,) = await _events(ws, 1)
        assert reset == {"type": "reset", "id": newest}
        live = await events.order_event(alice.id)
        (message,) = await _events(ws, 1)
        assert message["id"] == live
        await ws.close()


class TestAuthentication:
    async def test_no_auth_message_within_5_s_closes_4401(self, live_server: ServeFactory) -> None:
        server = live_server(workers=1)
        from websockets.asyncio.client import connect

        started = time.monotonic()
        async with connect(server.ws_url, open_timeout=20) as ws:
            code = await _close_code(ws, within=10)
        assert code == 4401
        assert 4.5 <= time.monotonic() - started <= 8

    @pytest.mark.parametrize(
        ("message", "code"),
        [
            ({"type": "auth", "access_token": "not-a-jwt"}, 4401),
            ({"type": "hello"}, 4401),
            ("not json", 4401),
            # An unknown key is an invalid credential (4401); a live key is refused (4403, below).
            ({"type": "auth", "access_token": "sk_" + "a" * 40}, 4401),
        ],
    )
    async def test_a_bad_first_message_closes_the_socket(
        self, live_server: ServeFactory, message: Any, code: int
    ) -> None:
        server = live_server(workers=1)
        from websockets.asyncio.client import connect

        async with connect(server.ws_url, open_timeout=20) as ws:
            await ws.send(message if isinstance(message, str) else json.dumps(message))
            assert await _close_code(ws, within=10) == code

    async def test_a_live_api_key_closes_the_socket_with_4403(
        self, live_server: ServeFactory, make_user: UserFactory, mint_token: Mint
    ) -> None:
        server = live_server(workers=1)
        key = await _api_key(server, mint_token(await make_user()))
        from websockets.asyncio.client import connect

        async with connect(server.ws_url, open_timeout=20) as ws:
            await ws.send(json.dumps({"type": "auth", "access_token": key}))
            assert await _close_code(ws, within=10) == 4403

    async def test_sse_refuses_api_keys_and_missing_tokens(
        self, live_server: ServeFactory, make_user: UserFactory, mint_token: Mint
    ) -> None:
        server = live_server(workers=1)
        live_key = await _api_key(server, mint_token(await make_user()))
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            key = await http.get("/api/v1/events", headers={"Authorization": f"Bearer {live_key}"})
            unknown = await http.get(
                "/api/v1/events", headers={"Authorization": "Bearer sk_" + "b" * 40}
            )
            missing = await http.get("/api/v1/events")
            bad = await http.get("/api/v1/events", headers={"Authorization": "Bearer nope"})
        assert key.status_code == 403
        assert key.headers["content-type"] == "application/problem+json"
        assert key.json()["code"] == "INSUFFICIENT_SCOPE"
        for response in (unknown, missing, bad):
            assert response.status_code == 401
            assert response.json()["code"] == "UNAUTHORIZED"
            assert response.headers["www-authenticate"] == "Bearer"

    async def test_a_foreign_origin_is_refused_before_the_handshake(
        self, live_server: ServeFactory, make_user: UserFactory, mint_token: Mint
    ) -> None:
        server = live_server(workers=1)
        alice = await make_user()
        with pytest.raises(InvalidStatus) as refused:
            await open_ws(server, mint_token(alice), origin="https://evil.example")
        response = refused.value.response
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-request-id"]
        body = json.loads(response.body)
        assert body["code"] == "FORBIDDEN"
        assert body["status"] == 403
        assert body["request_id"] == response.headers["x-request-id"]
        # The configured origin, and a client that sends none, may connect.
        for origin in (ALLOWED_ORIGIN, None):
            ws, ready = await open_ws(server, mint_token(alice), origin=origin)
            assert ready == {"type": "ready", "user_id": str(alice.id)}
            await ws.close()


class TestLifetime:
    async def test_a_revoked_session_closes_4401_within_5_s(
        self, live_server: ServeFactory, make_user: UserFactory
    ) -> None:
        from tests.conftest import DEFAULT_PASSWORD

        server = live_server()
        alice = await make_user()
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            login = await http.post(
                "/api/v1/auth/login", json={"email": alice.email, "password": DEFAULT_PASSWORD}
            )
            assert login.status_code == 200
            pair = login.json()
            other = (
                await http.post(
                    "/api/v1/auth/login",
                    json={"email": alice.email, "password": DEFAULT_PASSWORD},
                )
            ).json()
            ws, _ = await open_ws(server, pair["access_token"])
            survivor, _ = await open_ws(server, other["access_token"])
            headers = {"Authorization": f"Bearer {pair['access_token']}"}
            async with http.stream("GET", "/api/v1/events", headers=headers) as sse:
                assert sse.status_code == 200
                logout = await http.post(
                    "/api/v1/auth/logout",
                    json={"refresh_token": pair["refresh_token"]},
                    headers=headers,
                )
                assert logout.status_code == 204
                revoked_at = time.monotonic()
                assert await _close_code(ws, within=8) == 4401
                assert time.monotonic() - revoked_at <= 5
                async with asyncio.timeout(8):
                    async for _ in sse.aiter_raw():
                        pass
                assert time.monotonic() - revoked_at <= 5.5
        # The user's other session carries on.
        await _silent(survivor, 0.5)
        await survivor.close()

    async def test_an_expired_token_closes_4401(
        self, live_server: ServeFactory, make_user: UserFactory, mint_token: Mint
    ) -> None:
        server = live_server(workers=1)
        alice = await make_user()
        ws, _ = await open_ws(server, mint_token(alice, ttl=2))
        started = time.monotonic()
        assert await _close_code(ws, within=10) == 4401
        assert time.monotonic() - started <= 6

    async def test_shutdown_closes_websockets_with_1012_and_ends_sse_at_once(
        self, live_server: ServeFactory, make_user: UserFactory, mint_token: Mint
    ) -> None:
        server = live_server(workers=1, APP_GRACEFUL_SHUTDOWN_SECONDS="20")
        alice = await make_user()
        ws, _ = await open_ws(server, mint_token(alice))
        headers = {"Authorization": f"Bearer {mint_token(alice)}"}
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30) as http,
            http.stream("GET", "/api/v1/events", headers=headers) as sse,
        ):
            assert sse.status_code == 200
            started = time.monotonic()
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            assert await _close_code(ws, within=15) == 1012
            async with asyncio.timeout(15):
                async for _ in sse.aiter_raw():
                    pass
            ended = time.monotonic() - started
            await stopping
        assert ended < 10, "the streams waited for the graceful-shutdown timeout"
        events = [line.get("event") for line in server.log_lines()]
        assert "app.stopped" in events
        assert not any("timeout graceful shutdown exceeded" in str(e) for e in events)


async def _api_key(server: LiveServer, token: str) -> str:
    """A live API key of a new organization of the token's user, made through the API."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        org = await http.post("/api/v1/organizations", json={"name": "Streams"}, headers=headers)
        assert org.status_code == 201, org.text
        created = await http.post(
            f"/api/v1/organizations/{org.json()['id']}/api-keys",
            json={"name": "ci", "scopes": ["orders:read"]},
            headers=headers,
        )
        assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key
