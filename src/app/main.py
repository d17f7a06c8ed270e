"""The application factory and its lifespan.

`create_app(settings)` builds a fully configured app; the lifespan opens the engine, the session
factory and the Redis/ARQ client on start-up and closes them on shutdown. ASGI servers import
`app.main:app`, which is built on first access from the environment's settings.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from app.config import Settings, SettingsError, available_cpus, get_settings
from app.core import tracing
from app.core.cache import Cache
from app.core.database import (
    create_engine,
    create_session_factory,
    describe_engine,
)
from app.core.docs import install_docs
from app.core.errors import register_error_handlers
from app.core.jobs import install_dispatcher
from app.core.logging import configure_logging, get_logger
from app.core.middleware import install_middleware
from app.core.openapi import TAGS, install_openapi
from app.core.ratelimit import RateLimiter
from app.core.redis import create_redis
from app.core.routing import include, operation_id
from app.core.security import Passwords, Tokens
from app.core.sentry import setup_sentry
from app.core.storage import open_object_store
from app.features.auth.router import account_router
from app.features.auth.router import router as auth_router
from app.features.events.hub import Hub
from app.features.events.publisher import Relay, order_event
from app.features.events.router import EVENTS_WEBSOCKET_PATH, events_websocket
from app.features.events.router import docs_router as events_docs_router
from app.features.events.router import router as events_router
from app.features.events.store import EventStore
from app.features.health.router import router as health_router
from app.features.orders.router import org_router as organization_orders_router
from app.features.orders.router import router as orders_router
from app.features.organizations.keyauth import refuse_key_of_person_route
from app.features.organizations.router import invitations_router
from app.features.organizations.router import router as organizations_router
from app.features.products.router import IMAGE_UPLOAD_ROUTE, images_router
from app.features.products.router import router as products_router
from app.features.users.router import router as users_router
from app.shared.cursor import Cursors

log = get_logger(__name__)

API_PREFIX = "/api/v1"
SWAGGER_UI_PARAMETERS = {
    "persistAuthorization": True,
    "displayOperationId": True,
    "tryItOutEnabled": True,
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    redis = create_redis(settings)
    app.state.engine = engine
    session_factory = create_session_factory(engine)
    # Jobs enqueued in a request go to ARQ right after its commit (the relay covers the rest).
    dispatcher = install_dispatcher(session_factory, redis)
    app.state.job_dispatcher = dispatcher
    app.state.session_factory = session_factory
    app.state.redis = redis
    app.state.cache = Cache(redis, default_ttl=settings.cache_ttl_seconds)
    passwords = Passwords(settings)
    app.state.passwords = passwords
    app.state.tokens = Tokens(settings)
    app.state.rate_limiter = RateLimiter(settings, redis)
    storage = open_object_store(settings)
    app.state.object_store = await storage.__aenter__()
    # Image decoding holds a core and up to a few hundred MB: a few at a time per process.
    app.state.image_limiter = anyio.CapacityLimiter(max(1, min(4, available_cpus())))
    # Real-time events: published after commit from this process's sessions, relayed when that
    # did not happen, and fanned out to this process's streams by one reader.
    store = EventStore(
        redis,
        retention_seconds=settings.events_retention_seconds,
        max_length=settings.events_stream_max_length,
    )
    relay = Relay(store, session_factory)
    relay.install(session_factory)
    hub = Hub(settings, redis=redis, engine=engine)
    app.state.events_store = store
    app.state.events_hub = hub
    await hub.start(lambda: relay.run(settings.events_relay_interval_seconds, lambda: hub.running))
    log.info("app.started", environment=settings.environment, database=describe_engine(engine))
    # What is loaded by now (the framework, the models, the app) lives as long as the process:
    # keep the cyclic garbage collector from walking it again and again. A full collection over
    # it paused a worker for up to 130 ms under load (bench/results), the p99 of a read.
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        await hub.stop()
        await relay.drain()
        await dispatcher.drain()
        passwords.close()
        await storage.__aexit__(None, None, None)
        await redis.aclose()
        await engine.dispose()
        log.info("app.stopped")


def create_app(settings: Settings) -> FastAPI:
    if settings.otel_enabled:
        # Before the engine and Redis clients exist (the lifespan makes them): they are traced.
        tracing.setup_tracing("saas-api")
    configure_logging(settings.log_level, json=settings.json_logs, trace_ids=settings.otel_enabled)
    setup_sentry(settings, component="api")
    docs = settings.show_docs
    app = FastAPI(
        title="saas-backend",
        version="1.0.0",
        description=(
            "Auth, users, a product catalog and orders, over one REST API. Every error is an "
            "RFC 9457 Problem (`application/problem+json`) with a stable `code`; lists are "
            "paged; write routes that create take an `Idempotency-Key` where noted. The guide "
            "to this API is docs/api.md in the repository."
        ),
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        # Served by app.core.docs from the package's own assets, never from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    # Features reach the ones built on them only through what the app hands them here: the
    # people's authentication (users) answers API keys (organizations') with this gate, and
    # orders record their events in the streams' outbox (events) with this function.
    app.state.api_key_gate = refuse_key_of_person_route
    app.state.order_events = order_event
    app.state.cursors = Cursors(settings.jwt_secret.get_secret_value())
    register_error_handlers(app)
    install_middleware(
        app,
        settings,
        body_limit_exempt=[IMAGE_UPLOAD_ROUTE],
        websocket_routes={API_PREFIX + EVENTS_WEBSOCKET_PATH: events_websocket},
    )
    install_openapi(app)
    if docs:
        install_docs(app, openapi_url="/openapi.json", swagger_ui_parameters=SWAGGER_UI_PARAMETERS)
    # Routes are matched in this order, one after the other (about 2 us each): the most called
    # first. Auth comes last: a login costs an argon2 verify, thousands of times the matching.
    include(app, health_router)
    include(app, products_router, prefix=API_PREFIX)
    include(app, images_router, prefix=API_PREFIX)
    include(app, orders_router, prefix=API_PREFIX)
    include(app, organization_orders_router, prefix=API_PREFIX)
    include(app, organizations_router, prefix=API_PREFIX)
    include(app, invitations_router, prefix=API_PREFIX)
    include(app, users_router, prefix=API_PREFIX)
    include(app, account_router, prefix=API_PREFIX)
    include(app, events_router, prefix=API_PREFIX)
    if docs:
        app.include_router(events_docs_router)
    include(app, auth_router, prefix=API_PREFIX)
    if settings.otel_enabled:
        tracing.instrument_app(app)
    return app


def __getattr__(name: str) -> Any:
    """`app.main:app` for ASGI servers, built lazily so that importing this module needs no env."""
    if name == "app":
        try:
            application = create_app(get_settings())
        except SettingsError as exc:
            raise SystemExit(f"error: {exc}") from None
        globals()["app"] = application
        return application
    raise AttributeError(name)
