"""Pure ASGI middleware (not Starlette's base HTTP middleware: it breaks streaming and contextvars).

Order, outermost first, as `install_middleware` adds them:
RequestContext (request id, security headers, access log, metrics) -> CORS -> Compression
(GZip) -> Guard (body size limit, unhandled errors) -> FastAPI's exception middleware and router.
Unhandled errors are turned into a 500 Problem *inside* the others, so a 500 still carries the
request id, the security and CORS headers, and is logged and counted like any other response.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import fastapi.routing
import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from app.config import Settings
from app.core import metrics
from app.core.docs import DOCS_PAGES
from app.core.errors import (
    BodyTooLarge,
    internal_error_response,
    problem_response,
    service_unavailable_response,
)
from app.core.logging import get_logger
from app.core.outages import describe, is_outage

log = get_logger("app.access")
error_log = get_logger("app.errors")

REQUEST_ID_HEADER = "X-Request-ID"
GZIP_MINIMUM_SIZE = 1024
GZIP_SUFFIX = "-gz"  # on the ETag of a gzip-coded response (see core/http_cache.py)
# A response that says nothing about caching is not to be stored: everything but the public
# catalog reads (which say `public` or `private` themselves) is per caller or changes at once.
DEFAULT_CACHE_CONTROL = "no-store"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_UNMATCHED_ROUTE = "<unmatched>"


class _Templates:
    """Each route's full path template, as the app serves it (`/api/v1/orders/{order_id}`).

    `scope["route"]` is the route object a router declared: its path lacks the prefix it was
    included under (FastAPI resolves `include_router(prefix=...)` at request time), and the
    framework's own routes (`/openapi.json`, `/docs`) leave no route in the scope at all. So
    the app's effective routes are listed once, and a request's template is looked up by its
    route object (one dict lookup), or matched against the path when that is ambiguous (a
    router included twice) or absent.
    """

    def __init__(self, app: FastAPI) -> None:
        self.by_route: dict[int, list[tuple[re.Pattern[str], str]]] = {}
        self.plain: list[tuple[re.Pattern[str], str]] = []
        for original, effective in _effective_routes(app.routes):
            template = getattr(effective, "path_format", None)
            regex = getattr(effective, "path_regex", None)
            if not isinstance(template, str) or regex is None:
                continue
            self.by_route.setdefault(id(original), []).append((regex, template))
            if not isinstance(original, APIRoute):
                self.plain.append((regex, template))

    def lookup(self, scope: Scope) -> str:
        route = scope.get("route")
        path = scope.get("path", "")
        candidates = self.by_route.get(id(route), []) if route is not None else self.plain
        if len(candidates) == 1 and route is not None:
            return candidates[0][1]
        for regex, template in candidates:
            if regex.match(path):
                return template
        fallback = getattr(route, "path_format", None)
        return str(fallback) if fallback else _UNMATCHED_ROUTE


def _effective_routes(routes: list[BaseRoute]) -> list[tuple[object, object]]:
    """(declared route, route as served) pairs; the same object where FastAPI copies routes
    with their prefix at `include_router` (before 0.16x)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:  # pragma: no cover - older FastAPI: routes carry their full path
        return [(route, route) for route in routes]
    return [(context.original_route, context) for context in iterate(routes)]


def route_template(scope: Scope) -> str:
    """The matched route's full path template (`/api/v1/orders/{order_id}`), never the raw
    path; `<unmatched>` when no route matched (a 404)."""
    app = scope.get("app")
    if not isinstance(app, FastAPI):
        path = getattr(scope.get("route"), "path_format", None)
        return str(path) if path else _UNMATCHED_ROUTE
    templates = getattr(app.state, "route_templates", None)
    if templates is None:
        templates = app.state.route_templates = _Templates(app)
    return templates.lookup(scope)


WebSocketEndpoint = Callable[[WebSocket], Awaitable[None]]


def client_ip(scope: Scope) -> str | None:
    """The peer address as the server resolved it (uvicorn applies trusted proxy headers)."""
    client = scope.get("client")
    return client[0] if client else None


class RequestContextMiddleware:
    """The outermost layer: request id in and out, the security headers of API.md, one access
    line and the metrics per request.

    One layer with one `send` wrapper instead of one per concern: every layer of pure ASGI
    middleware costs a call and a closure per message on every request (measured with
    `bench/inproc.py`: the stack of six layers was a third of `GET /health`'s CPU).
    """

    _API_CSP = "default-src 'none'; frame-ancestors 'none'"
    _HSTS = "max-age=63072000; includeSubDomains"

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool,
        docs_paths: frozenset[str],
        websocket_routes: Mapping[str, WebSocketEndpoint] | None = None,
    ) -> None:
        self.app = app
        self.hsts = hsts
        self.docs_paths = docs_paths
        self.websocket_routes = dict(websocket_routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self.websocket_routes:
                endpoint = self.websocket_routes.get(_route_path(scope))
                if endpoint is not None:
                    await endpoint(WebSocket(scope, receive, send))
                    return
            await self.app(scope, receive, send)
            return

        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _VALID_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        )
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        is_docs = scope["path"] in self.docs_paths

        status = 500
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                if is_docs:
                    # The docs pages bring their own (app.core.docs.page_csp).
                    headers.setdefault("Content-Security-Policy", self._API_CSP)
                elif "json" in headers.get("content-type", ""):
                    headers["Content-Security-Policy"] = self._API_CSP
                if self.hsts:
                    headers["Strict-Transport-Security"] = self._HSTS
                if "cache-control" not in headers:
                    headers["Cache-Control"] = DEFAULT_CACHE_CONTROL
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            duration = time.perf_counter() - started
            route = route_template(scope)
            metrics.observe_request(scope["method"], route, status, duration)
            if status == 429:  # only rate limits answer 429
                metrics.rate_limit_rejected(route)
            log.info(
                "http.request",
                method=scope["method"],
                route=route,
                path=scope["path"],
                status=status,
                duration_ms=round(duration * 1000, 2),
                client_ip=client_ip(scope),
            )
            structlog.contextvars.clear_contextvars()


class CompressionMiddleware:
    """GZip for clients that accept it; the others pass straight through.

    Starlette's GZipMiddleware wraps every response, even one it will not compress; here only
    requests with `Accept-Encoding: gzip` pay for it. An uncompressed answer large enough to
    have been compressed still says `Vary: Accept-Encoding`, as Starlette's does, so caches
    keep the two apart. A compressed response's strong ETag gets the `-gz` suffix: the tag is
    of the uncompressed JSON, and the two codings are different representations.
    """

    def __init__(self, app: ASGIApp, *, minimum_size: int) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "gzip" in (_header(scope, b"accept-encoding") or ""):

            async def send_coded(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = MutableHeaders(scope=message)
                    if headers.get("content-encoding") == "gzip":
                        etag = headers.get("etag")
                        if etag and etag.startswith('"') and etag.endswith('"'):
                            headers["ETag"] = f'{etag[:-1]}{GZIP_SUFFIX}"'
                    _dedupe_vary(headers)
                await send(message)

            await self.gzip(scope, receive, send_coded)
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                length = headers.get("content-length")
                large = length is None or (length.isdigit() and int(length) >= self.minimum_size)
                if large and "accept-encoding" not in headers.get("vary", "").lower():
                    headers.add_vary_header("Accept-Encoding")
            await send(message)

        await self.app(scope, receive, send_with_vary)


class GuardMiddleware:
    """The innermost layer: the body size limit and the last word on unexpected errors.

    413 for a body over the limit, at once from Content-Length or while it streams in. A lost
    or refused connection to PostgreSQL or Redis (`app.core.outages`) becomes a 503 Problem
    with `Retry-After` and one warning line. Anything else unexpected becomes a generic 500
    Problem, its traceback logged once, here: inside the other
    layers, so a 500 still carries the request id, the security and CORS headers, and is logged
    and counted like any other response.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, exempt: Sequence[BodyLimitExemption] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.exempt and self._is_exempt(scope):
            await self._guarded(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        await self._guarded(scope, limited_receive, send)

    def _is_exempt(self, scope: Scope) -> bool:
        method, path = scope["method"], scope["path"]
        return any(
            method == exemption.method and exemption.path.fullmatch(path)
            for exemption in self.exempt
        )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if is_outage(exc):
                # PostgreSQL or Redis is away: a 503 the client can retry, and one line here
                # (a traceback per request would bury it, dozens of frames each).
                error_log.warning(
                    "request.service_unavailable",
                    method=scope["method"],
                    path=scope["path"],
                    error=describe(exc),
                )
                if response_started:
                    raise
                await service_unavailable_response(scope)(scope, receive, send)
                return
            error_log.exception(
                "request.unhandled_error", method=scope["method"], path=scope["path"]
            )
            if response_started:
                raise
            await internal_error_response(scope)(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            scope,
            status=413,
            code="PAYLOAD_TOO_LARGE",
            detail=f"Request body over the limit of {self.max_bytes} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _dedupe_vary(headers: MutableHeaders) -> None:
    """One `Vary` header without repeats (GZip appends `Accept-Encoding` to what is there)."""
    values = headers.getlist("vary")
    if not values:
        return
    seen: dict[str, str] = {}
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name:
                seen.setdefault(name.lower(), name)
    headers["Vary"] = ", ".join(seen.values())


def gzip_applies(scope: Scope, size: int) -> bool:
    """Whether a response of `size` bytes to this request would be gzip-coded."""
    return size >= GZIP_MINIMUM_SIZE and "gzip" in (_header(scope, b"accept-encoding") or "")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


@dataclass(frozen=True, slots=True)
class BodyLimitExemption:
    """A route that reads its own body under its own limit (an upload), not APP_MAX_BODY_BYTES."""

    method: str
    path: re.Pattern[str]


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def install_middleware(
    app: FastAPI,
    settings: Settings,
    *,
    body_limit_exempt: Sequence[BodyLimitExemption] = (),
    websocket_routes: Mapping[str, WebSocketEndpoint] | None = None,
) -> None:
    """Add the stack; `add_middleware` prepends, so the last added is the outermost.

    `websocket_routes` (path -> endpoint) are WebSockets served straight from the outermost
    layer: the other layers are pure HTTP (they pass a WebSocket through untouched), yet each
    one, and the router's layers after them, would keep a frame (and some a context) alive for
    as long as the connection lasts, about half of an idle connection's memory
    (bench/results/realtime-2026-12-07-ws-memory.md)."""
    docs_paths = DOCS_PAGES if settings.show_docs else frozenset()
    app.add_middleware(GuardMiddleware, max_bytes=settings.max_body_bytes, exempt=body_limit_exempt)
    app.add_middleware(CompressionMiddleware, minimum_size=GZIP_MINIMUM_SIZE)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_credentials=False,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        expose_headers=[
            "X-Request-ID",
            "Location",
            "Retry-After",
            "Idempotent-Replayed",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ],
        max_age=600,
    )
    app.add_middleware(
        RequestContextMiddleware,
        hsts=settings.is_production,
        docs_paths=docs_paths,
        websocket_routes=websocket_routes,
    )


def header_value(scope: Scope, name: str) -> str | None:
    """A request header from the ASGI scope (case-insensitive name)."""
    return _header(scope, name.lower().encode("latin-1"))
