"""`/api/v1/events`: order events over Server-Sent Events and a WebSocket (API.md, "Real-time
events"), and `/asyncapi.json`, the WebSocket's AsyncAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Annotated, Any

from fastapi import Header, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from app.core.errors import (
    AppError,
    ServiceUnavailableError,
    UnauthorizedError,
    error_responses,
    problem_response,
)
from app.core.logging import get_logger
from app.core.reads import ReadConnection
from app.core.routing import make_router
from app.core.security import is_api_key
from app.features.events import metrics
from app.features.events.asyncapi import build_asyncapi
from app.features.events.audience import viewer_audiences
from app.features.events.errors import InsufficientScopeError
from app.features.events.hub import (
    CLIENT_GONE,
    CLOSE_API_KEY,
    CLOSE_TRY_LATER,
    CLOSE_UNAUTHORIZED,
    Connection,
    Hub,
)
from app.features.events.schemas import AuthMessage
from app.features.events.store import EventStore, Replay, parse_id
from app.features.organizations.keyauth import authenticate_key
from app.features.users.deps import BearerToken, authenticate_viewer
from app.features.users.models import Role

log = get_logger(__name__)

router = make_router(prefix="/events", tags=["events"])

_CLOSE_REASONS = {
    CLOSE_UNAUTHORIZED: "unauthorized",
    CLOSE_API_KEY: "API keys cannot open event streams",
    1008: "too slow: more live events queued than allowed",
    1012: "server restarting",
    CLOSE_TRY_LATER: "sessions cannot be checked right now",
}

_SSE_EXAMPLE = (
    "retry: 2000\n\n"
    "id: 1765065600000-0\n"
    "event: order.created\n"
    'data: {"type":"event","id":"1765065600000-0","event":"order.created",'
    '"data":{"id":"0190f1c2-...","status":"pending","...":"..."},"at":"2026-12-07T00:00:00Z"}\n\n'
    ": heartbeat\n\n"
)


def _hub(state: Any) -> Hub:
    hub: Hub = state.events_hub
    return hub


def _store(state: Any) -> EventStore:
    store: EventStore = state.events_store
    return store


async def _open(client: HTTPConnection, token: str | None, transport: str) -> Connection:
    """Authenticate a stream and build its connection (not yet registered).

    An API key is checked like anywhere else first: an unknown, deleted or expired one is an
    invalid credential (401, 4401); a live one may not open a stream (403, 4403)."""
    state = client.app.state
    if token and is_api_key(token):
        await authenticate_key(client, token)
        raise InsufficientScopeError
    connection = ReadConnection(state.engine)
    try:
        viewer, claims = await authenticate_viewer(state, token, connection)
        admin = viewer.role == Role.admin
        audiences = (await viewer_audiences(connection, {viewer.id: admin}))[viewer.id]
    finally:
        await connection.close()
    return Connection(
        transport=transport,
        user_id=viewer.id,
        session_id=claims.session_id,
        token_version=claims.version,
        expires_at=claims.expires_at,
        is_admin=admin,
        audiences=audiences,
        limit=state.settings.events_queue_limit,
    )


async def _replay(state: Any, connection: Connection, last_event_id: str | None) -> Replay | None:
    if last_event_id is None:
        return None
    return await _store(state).replay(connection.audiences, last_event_id[:64])


def _reset_payload(reset_id: str) -> str:
    return json.dumps({"type": "reset", "id": reset_id}, separators=(",", ":"))


# Server-Sent Events -----------------------------------------------------------------------------


class EventStreamResponse(Response):
    """`text/event-stream`: replayed events or a reset, then live events and heartbeats, until
    the session ends, the client leaves, or the server shuts down."""

    media_type = "text/event-stream"

    def __init__(
        self,
        hub: Hub | None = None,
        connection: Connection | None = None,
        replay: Replay | None = None,
        heartbeat: float = 20.0,
    ) -> None:
        super().__init__(
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            media_type=self.media_type,
        )
        self.hub = hub
        self.connection = connection
        self.replay = replay
        self.heartbeat = heartbeat
        # No Content-Length: the body streams (chunked) until the stream ends.
        del MutableHeaders(raw=self.raw_headers)["content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub, connection = self.hub, self.connection
        assert hub is not None
        assert connection is not None
        started = time.monotonic()
        watcher = asyncio.create_task(_watch_disconnect(receive, connection))
        connection.pump = asyncio.current_task()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._stream(send, connection)
            if connection.close_code != CLIENT_GONE:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(
                        send({"type": "http.response.body", "body": b"", "more_body": False}),
                        timeout=10,
                    )
        finally:
            watcher.cancel()
            hub.unregister(connection)
            _log_closed(connection, started)

    async def _stream(self, send: Send, connection: Connection) -> None:
        async def body(chunk: bytes) -> bool:
            return await connection.send(
                send({"type": "http.response.body", "body": chunk, "more_body": True})
            )

        if not await body(b"retry: 2000\n\n"):
            return
        replay = self.replay
        if replay is not None and replay.events is not None:
            async for replayed in replay.events:
                if connection.close_code is not None or not await body(replayed.sse()):
                    return
                connection.sent_after = replayed.key
                metrics.SENT.labels("sse").inc()
        elif replay is not None and replay.reset_id is not None:
            reset = (
                f"id: {replay.reset_id}\nevent: reset\ndata: {_reset_payload(replay.reset_id)}\n\n"
            )
            if not await body(reset.encode()):
                return
            connection.sent_after = parse_id(replay.reset_id)
        while True:
            event = await connection.next(self.heartbeat)
            if event is None:
                if connection.close_code is not None:
                    return
                if not await body(b": heartbeat\n\n"):
                    return
                continue
            if not await body(event.sse()):
                return
            metrics.SENT.labels("sse").inc()


async def _watch_disconnect(receive: Receive, connection: Connection) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            connection.close(CLIENT_GONE)
            return


LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="Resume after this event id (browsers' EventSource sends it when it "
        "reconnects): the events after it are replayed first, or a `reset` event is sent when "
        "they are no longer kept. Any value is accepted; one that is not a kept id gets `reset`.",
    ),
]


@router.get(
    "",
    response_class=EventStreamResponse,
    status_code=200,
    summary="Stream order events (Server-Sent Events)",
    responses={
        200: {
            "description": "An endless `text/event-stream`. Each event has `id:` (opaque, "
            "increasing), `event:` (`order.created`, `order.status_changed` or `reset`) and "
            "`data:` (the message object: `{type, id, event, data: OrderOut, at}`, or "
            '`{type: "reset", id}`). A comment line (`: heartbeat`) comes at least every '
            "25 s. The response ends when the access token expires or its session is revoked "
            "(within 5 s), when the server shuts down, or when more than 1,000 live events "
            "are queued behind a slow client: reconnect with a fresh token and `Last-Event-ID`.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": _SSE_EXAMPLE,
                }
            },
        },
        **error_responses(UnauthorizedError, InsufficientScopeError, ServiceUnavailableError),
    },
)
async def stream_events(
    request: Request, token: BearerToken, last_event_id: LastEventId = None
) -> Response:
    """Order events as they happen: your own orders, your organizations' orders, and for
    admins every order. Authenticate with `Authorization: Bearer <access token>` (API keys are
    refused: 403 `INSUFFICIENT_SCOPE`); resume after a disconnect with `Last-Event-ID`. The
    WebSocket `/api/v1/events/ws` carries the same events (see `/asyncapi.json`)."""
    state = request.app.state
    connection = await _open(request, token, "sse")
    hub = _hub(state)
    # Subscribed before the response head goes out: every event committed from then on is
    # delivered (API.md).
    hub.register(connection)
    try:
        replay = await _replay(state, connection, last_event_id)
    except Exception:
        hub.unregister(connection)
        raise ServiceUnavailableError("The event store is unavailable") from None
    _log_opened(connection)
    return EventStreamResponse(
        hub, connection, replay, heartbeat=state.settings.events_heartbeat_seconds
    )


# WebSocket ------------------------------------------------------------------------------------


def _origin_allowed(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser: nothing to hijack
    allowed: list[str] = websocket.app.state.settings.allowed_origins
    return "*" in allowed or origin in allowed


async def _refuse_origin(websocket: WebSocket) -> None:
    """A 403 Problem instead of the handshake, with the headers every response carries."""
    scope = websocket.scope
    incoming = websocket.headers.get("x-request-id")
    request_id = incoming if incoming and _valid_request_id(incoming) else str(uuid.uuid4())
    scope.setdefault("state", {})["request_id"] = request_id
    response: JSONResponse = problem_response(
        scope,
        status=403,
        code="FORBIDDEN",
        detail="This Origin may not open the event stream",
    )
    headers = MutableHeaders(raw=response.raw_headers)
    headers["X-Request-ID"] = request_id
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    if websocket.app.state.settings.is_production:
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    log.info("events.origin_refused", origin=websocket.headers.get("origin"))
    await websocket.send_denial_response(response)


def _valid_request_id(value: str) -> bool:
    from app.core.middleware import _VALID_REQUEST_ID

    return bool(_VALID_REQUEST_ID.match(value))


async def _first_message(websocket: WebSocket, seconds: float) -> AuthMessage | int | None:
    """The auth message; a close code when it is missing, late or invalid; None when the
    client left."""
    try:
        message = await asyncio.wait_for(websocket.receive(), seconds)
    except TimeoutError:
        return CLOSE_UNAUTHORIZED
    if message["type"] == "websocket.disconnect":
        return None
    raw = message.get("text")
    if raw is None and message.get("bytes") is not None:
        raw = message["bytes"].decode("utf-8", "replace")
    try:
        return AuthMessage.model_validate_json(raw or "")
    except ValidationError:
        return CLOSE_UNAUTHORIZED


EVENTS_WEBSOCKET_PATH = "/events/ws"  # under the API prefix


@router.websocket("/ws", name="events_websocket")
async def events_websocket(websocket: WebSocket) -> None:
    """The WebSocket transport (documented in `/asyncapi.json`).

    The app serves it straight from its outermost layer (`install_middleware`'s
    `websocket_routes`), not through the middleware stack and the router: each layer would
    keep a frame, and some a context, alive for the connection's whole life.
    """
    if not _origin_allowed(websocket):
        await _refuse_origin(websocket)
        return
    state = websocket.app.state
    hub = _hub(state)
    await websocket.accept()
    opened = await _authenticate(websocket, state)
    if opened is None:
        return
    connection, last_event_id = opened
    hub.register(connection)
    started = time.monotonic()
    _log_opened(connection)
    connection.pump = asyncio.current_task()
    try:
        await _pump_websocket(websocket, connection, state, last_event_id)
    except (WebSocketDisconnect, OSError, RuntimeError):
        connection.close(CLIENT_GONE)
    finally:
        hub.unregister(connection)
        _log_closed(connection, started)
    code = connection.close_code
    if code is not None and code != CLIENT_GONE:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await _close(websocket, code)


async def _authenticate(websocket: WebSocket, state: Any) -> tuple[Connection, str | None] | None:
    """The connection of the auth message and the id to resume after; None once the socket is
    closed (the client left, or was refused). The auth message and its token are not kept."""
    first = await _first_message(websocket, state.settings.events_auth_timeout_seconds)
    if first is None:
        return None
    if isinstance(first, int):
        await _close(websocket, first)
        return None
    try:
        connection = await _open(websocket, first.access_token, "ws")
    except InsufficientScopeError:
        await _close(websocket, CLOSE_API_KEY)
        return None
    except UnauthorizedError:
        await _close(websocket, CLOSE_UNAUTHORIZED)
        return None
    except (AppError, OSError):
        await _close(websocket, CLOSE_TRY_LATER)
        return None
    return connection, first.last_event_id


async def _pump_websocket(
    websocket: WebSocket, connection: Connection, state: Any, last_event_id: str | None
) -> None:
    """Replay, then live events; between them, wait for the client's next message, which is
    ignored (API.md) unless it is the disconnect. This task is the connection's only one."""

    async def deliver(text: str) -> bool:
        return await connection.send(websocket.send_text(text))

    ready = json.dumps({"type": "ready", "user_id": str(connection.user_id)})
    if not await deliver(ready):
        return
    try:
        replay = await _replay(state, connection, last_event_id)
    except Exception:
        connection.close(CLOSE_TRY_LATER)
        return
    if replay is not None and replay.events is not None:
        async for replayed in replay.events:
            if connection.close_code is not None or not await deliver(replayed.text()):
                return
            connection.sent_after = replayed.key
            metrics.SENT.labels("ws").inc()
    elif replay is not None and replay.reset_id is not None:
        if not await deliver(_reset_payload(replay.reset_id)):
            return
        connection.sent_after = parse_id(replay.reset_id)
    del replay
    # Heartbeats are the server's ping frames (uvicorn, every APP_EVENTS_HEARTBEAT_SECONDS).
    while True:
        event = connection.pop()
        if event is not None:
            if not await deliver(event.text()):
                return
            metrics.SENT.labels("ws").inc()
            continue
        if connection.close_code is not None:
            return
        message = await connection.receive(websocket.receive)
        if message is not None and message["type"] == "websocket.disconnect":
            connection.close(CLIENT_GONE)
            return


async def _close(websocket: WebSocket, code: int) -> None:
    await websocket.close(code, reason=_CLOSE_REASONS.get(code, ""))


def _log_opened(connection: Connection) -> None:
    import os

    log.info(
        "events.connected",
        transport=connection.transport,
        user_id=str(connection.user_id),
        admin=connection.is_admin,
        pid=os.getpid(),
    )


def _log_closed(connection: Connection, started: float) -> None:
    log.info(
        "events.disconnected",
        transport=connection.transport,
        user_id=str(connection.user_id),
        code=connection.close_code,
        seconds=round(time.monotonic() - started, 1),
    )


# The AsyncAPI document ------------------------------------------------------------------------

docs_router = make_router(tags=["events"])


@docs_router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi_document(request: Request) -> JSONResponse:
    """The AsyncAPI 3 document of the WebSocket transport."""
    app = request.app
    document = getattr(app.state, "asyncapi", None)
    if document is None:
        document = app.state.asyncapi = build_asyncapi(title=app.title, version=app.version)
    return JSONResponse(document)
