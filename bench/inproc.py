"""The app's own CPU per request, in process: no server, no load client, no network noise.

`wrk` measures the whole machine (client, server, PostgreSQL, Redis on the same cores); this
measures only the app's Python, which is what an optimisation of the app changes. It builds the
app with the benchmark's production settings against a small seeded database, drives each
scenario's request through the ASGI callable with `--concurrency` requests in flight, and
prints the process CPU per request. `--profile NAME` prints cProfile's hottest functions.

    uv run python -m bench.inproc                      # every scenario, 2,000 requests each
    uv run python -m bench.inproc --only users_me --profile users_me
    uv run python -m bench.inproc --round-trips order_create   # what one request waits for

Numbers are per request of this process; PostgreSQL and Redis CPU are not included.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import pstats
import random
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop

from bench import appglue, seed, wire
from bench.services import Services, create_database, drop_database, dsn, find_services


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    query: bytes = b""


async def call(
    app: Any,
    request: Request,
    headers_out: dict[bytes, bytes] | None = None,
    on_send: Callable[[dict[str, Any]], Any] | None = None,
) -> tuple[int, bytes]:
    """One request through the ASGI app; its status and body (its headers in `headers_out`)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query,
        "root_path": "",
        "headers": [(b"host", b"bench"), *request.headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if on_send is not None:
            await on_send(message)
        if message["type"] == "http.response.start":
            status = message["status"]
            if headers_out is not None:
                headers_out.update(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", b"Bearer " + token.encode())


async def _main(args: argparse.Namespace, services: Services) -> None:
    from app.cli import run_migrations
    from app.config import load_settings
    from app.main import create_app

    name = f"bench_inproc_{secrets.token_hex(3)}"
    database_url = await create_database(services.database_url, name)
    try:
        await asyncio.to_thread(run_migrations, database_url)
        settings = load_settings(
            environment="production",
            database_url=database_url,
            redis_url=services.redis_url,
            jwt_secret=secrets.token_urlsafe(48),
            log_level="INFO",
            log_format="json",
            rate_limit_enabled=True,
            rate_limit_login="1000000/minute",
            rate_limit_failed_logins="1000000/minute",
            # Required in production; nothing here touches an image (the client is lazy).
            storage_url="s3://bench-media?endpoint=http://127.0.0.1:9",
        )
        hasher = appglue.resolve_hasher(settings)
        password_hash = hasher.hash(seed.PASSWORD)
        verify = appglue.time_verify(hasher, password_hash, seed.PASSWORD)
        print(f"argon2 verify {verify.cpu_s * 1e6:8.0f} us CPU (login is that plus the app's)")
        seeded = await seed.seed(
            dsn(database_url),
            password_hash=password_hash,
            users=200,
            products=100,
            orders=2000,
            token_users=16,
            currency=settings.currency,
        )
        proxies: list[wire.CountingProxy] = []
        if args.round_trips:
            settings, proxies = await _through_proxies(settings, args.wire)
        app = create_app(settings)
        # The log lines go where a server's would, a file descriptor, not a terminal.
        devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(devnull)
        try:
            async with app.router.lifespan_context(app):
                await _run(app, args, seeded)
        finally:
            for proxy in proxies:
                await proxy.stop()
    finally:
        await drop_database(services.database_url, name)


def _scripts() -> dict[str, str]:
    """The app's Lua scripts by SHA (what an EVALSHA runs)."""
    import hashlib

    from app.core import cache, ratelimit
    from app.features.events import store

    scripts = {
        "cache get": cache._GET_SCRIPT,
        "cache invalidation": cache._BUMP_SCRIPT,
        "rate limit": ratelimit._ACQUIRE_SCRIPT,
        "event publication": store._PUBLISH,
    }
    return {hashlib.sha1(body.encode()).hexdigest(): name for name, body in scripts.items()}


async def _through_proxies(settings: Any, log: wire.WireLog) -> tuple[Any, list[Any]]:
    """The settings with PostgreSQL and Redis reached through counting proxies."""
    from sqlalchemy.engine import make_url

    database = make_url(settings.database_url)
    redis = urllib.parse.urlsplit(settings.redis_url)
    postgres_proxy = wire.CountingProxy(
        "postgres", database.host or "127.0.0.1", database.port or 5432, log, wire.PostgresLabeller
    )
    label = wire.redis_labeller(_scripts())
    redis_proxy = wire.CountingProxy(
        "redis", redis.hostname or "127.0.0.1", redis.port or 6379, log, lambda: label
    )
    database_url = database.set(host="127.0.0.1", port=await postgres_proxy.start())
    redis_url = redis._replace(netloc=f"{redis.hostname}:{await redis_proxy.start()}")
    changed = settings.model_copy(
        update={
            "database_url": database_url.render_as_string(hide_password=False),
            "redis_url": urllib.parse.urlunsplit(redis_url),
        }
    )
    return changed, [postgres_proxy, redis_proxy]


async def _count_round_trips(
    app: Any, name: str, make: Callable[[], Request], log: wire.WireLog
) -> None:
    """One request at a time: the turns each waits for before its response and after it."""
    for _ in range(20):  # warm: prepared statements, pools, caches
        await call(app, make())
    await asyncio.sleep(0.5)
    log.take()
    samples = 5
    for sample in range(samples):
        log.responded = False
        request = make()
        status = await _call_marking_response(app, request, log)
        await asyncio.sleep(0.3)  # post-response work
        turns = log.take()
        before = [t for t in turns if not t.after_response]
        after = [t for t in turns if t.after_response]
        print(
            f"{name} #{sample + 1}: status {status}, {len(before)} round trips before the "
            f"response, {len(after)} after it"
        )
        if sample == samples - 1:
            for turn in turns:
                where = "after " if turn.after_response else "before"
                print(f"  {where} {turn.server:8s} c{turn.connection:<3d} {turn.label}")


async def _call_marking_response(app: Any, request: Request, log: wire.WireLog) -> int:
    async def send_hook(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            log.responded = True

    status, _ = await call(app, request, on_send=send_hook)
    return status


async def _run(app: Any, args: argparse.Namespace, seeded: seed.SeedResult) -> None:
    rng = random.Random(6)
    tokens: list[tuple[str, list[str]]] = []
    for user in seeded.token_users:
        body = json.dumps({"email": user["email"], "password": seed.PASSWORD}).encode()
        status, raw = await call(
            app,
            Request(
                "POST",
                "/api/v1/auth/login",
                [(b"content-type", b"application/json")],
                body,
            ),
        )
        assert status == 200, raw
        tokens.append((json.loads(raw)["access_token"], [str(o) for o in user["orders"]]))
    products = seeded.product_ids
    # Each product's ETag, for the conditional read (none on a tree without them).
    etags: dict[str, bytes] = {}
    for product in products:
        answer: dict[bytes, bytes] = {}
        await call(app, Request("GET", f"/api/v1/products/{product}"), answer)
        etags[product] = answer.get(b"etag", b'"none"')

    def health() -> Request:
        return Request("GET", "/health")

    def product_get() -> Request:
        return Request("GET", f"/api/v1/products/{rng.choice(products)}")

    def product_get_304() -> Request:
        product = rng.choice(products)
        return Request("GET", f"/api/v1/products/{product}", [(b"if-none-match", etags[product])])

    def product_list() -> Request:
        return Request("GET", "/api/v1/products")

    def users_me() -> Request:
        return Request("GET", "/api/v1/users/me", [bearer(rng.choice(tokens)[0])])

    def order_get() -> Request:
        token, orders = rng.choice([t for t in tokens if t[1]])
        return Request("GET", f"/api/v1/orders/{rng.choice(orders)}", [bearer(token)])

    def order_list() -> Request:
        return Request("GET", "/api/v1/orders", [bearer(rng.choice(tokens)[0])])

    def order_create() -> Request:
        items = [
            {"product_id": p, "quantity": rng.randint(1, 3)}
            for p in rng.sample(products, rng.randint(1, 3))
        ]
        return Request(
            "POST",
            "/api/v1/orders",
            [
                bearer(rng.choice(tokens)[0]),
                (b"content-type", b"application/json"),
                (b"idempotency-key", uuid.uuid4().hex.encode()),
            ],
            json.dumps({"items": items}).encode(),
        )

    def login() -> Request:
        user = rng.choice(seeded.token_users)
        body = json.dumps({"email": user["email"], "password": seed.PASSWORD}).encode()
        return Request("POST", "/api/v1/auth/login", [(b"content-type", b"application/json")], body)

    scenarios: dict[str, Callable[[], Request]] = {
        "health": health,
        "product_get": product_get,
        "product_get_304": product_get_304,
        "product_list": product_list,
        "users_me": users_me,
        "order_get": order_get,
        "order_list": order_list,
        "order_create": order_create,
        "login": login,
    }
    if args.round_trips:
        for name in args.round_trips.split(","):
            await _count_round_trips(app, name, scenarios[name], args.wire)
        return
    chosen = args.only.split(",") if args.only else list(scenarios)
    for name in chosen:
        make = scenarios[name]
        count = {"order_create": args.requests // 4, "login": args.requests // 20}.get(
            name, args.requests
        )
        requests = [make() for _ in range(count)]
        for status, body in await _drive(app, requests[: args.concurrency * 4], args):
            assert status < 400, (name, status, body[:300])
        profiler = cProfile.Profile(time.process_time) if name in args.profile.split(",") else None
        cpu, loop_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        results = await _drive(app, requests, args)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        loop_cpu = time.thread_time() - loop_cpu
        bad = sum(1 for status, _ in results if status >= 400)
        print(
            f"{name:14s} {cpu / count * 1e6:8.0f} us CPU/request "
            f"({loop_cpu / count * 1e6:6.0f} on the event loop)  "
            f"{count / wall:8.0f} req/s in process  errors {bad}",
            flush=True,
        )
        if profiler:
            pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


async def _drive(app: Any, requests: list[Request], args: argparse.Namespace) -> list[Any]:
    queue = list(reversed(requests))
    results: list[Any] = []

    async def worker() -> None:
        while queue:
            results.append(await call(app, queue.pop()))

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only", default="", help="comma-separated scenarios")
    parser.add_argument("--profile", default="", help="comma-separated scenarios to profile")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--round-trips",
        default="",
        help="comma-separated scenarios: count and name the PostgreSQL and Redis round trips "
        "of one request (through counting proxies), before and after its response",
    )
    args = parser.parse_args()
    args.wire = wire.WireLog()
    services = find_services()
    try:
        # uvloop, as `saas serve` runs.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_main(args, services))
    finally:
        services.stop()


if __name__ == "__main__":
    main()
