"""Where an API worker's memory goes: what it imports, and its RSS while it serves.

    uv run python -m bench.memory imports      # a worker's imports: RSS and tracemalloc by package
    uv run python -m bench.memory serve        # `saas serve --workers 2`: each worker's RSS
                                               # after start, reads, orders and logins

`imports` replays in a fresh interpreter what a `saas serve` worker process loads: uvicorn
starts each worker with multiprocessing's spawn, which first re-imports the parent's main script
(the `saas` console script) as `__mp_main__`, then uvicorn's server, then `app.main:app`. The
Python allocations of those imports are grouped by the package whose code made them
(`tracemalloc`); the RSS (from `/proc/self/status`) is read after each step.

`serve` starts the real server against a fresh, small seeded database, with the benchmark's
production settings, and reads each worker's RSS from `/proc/<pid>/status`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

# Required in production; never reached (the object store's client is made at the first image).
_STORAGE_URL = "s3://bench-media?endpoint=http://127.0.0.1:9"

_IMPORTS = r"""
import os, sys, json, time, tracemalloc

def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0

if TRACE:
    tracemalloc.start(1)
steps = [("interpreter", rss(), len(sys.modules))]
from multiprocessing import spawn
spawn.prepare({"init_main_from_path": SCRIPT, "sys_path": sys.path})
steps.append(("`saas` script as __mp_main__", rss(), len(sys.modules)))
import uvicorn._subprocess, uvicorn.server, uvicorn.config
steps.append(("uvicorn's worker side", rss(), len(sys.modules)))
import app.main
steps.append(("import app.main", rss(), len(sys.modules)))
from app.config import get_settings
application = app.main.create_app(get_settings())
steps.append(("create_app()", rss(), len(sys.modules)))
application.openapi()
steps.append(("its OpenAPI document", rss(), len(sys.modules)))
traced = tracemalloc.get_traced_memory()[0] if TRACE else 0
print(json.dumps({"steps": steps, "traced": traced, "modules": sorted(sys.modules)}))
"""

# One package imported alone in a fresh interpreter: its RSS and Python allocations, with
# everything it pulls in (so the costs of two packages overlap where they share dependencies).
_ONE = r"""
import sys, json, tracemalloc
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0
before = rss()
modules = len(sys.modules)
tracemalloc.start()
__import__(NAME)
traced = tracemalloc.get_traced_memory()[0]
tracemalloc.stop()
print(json.dumps([rss() - before, traced, len(sys.modules) - modules]))
"""

# What a worker imports, biggest first; the third-party ones a worker would not need are in
# NOT_NEEDED (the CLI's, the dev servers', the tests' and the benchmark's).
PACKAGES = [
    "sqlalchemy.ext.asyncio", "sqlmodel", "pydantic", "fastapi", "starlette", "uvicorn",
    "redis.asyncio", "asyncpg", "arq", "limits.aio.storage", "jose", "argon2", "structlog",
    "prometheus_client", "jinja2", "aiosmtplib", "email_validator", "cryptography.x509",
    "opentelemetry.trace", "fastapi_offline", "typer", "rich", "rich.traceback", "click",
    "pygments", "dotenv", "watchfiles", "alembic", "app.config", "app.cli", "app.main",
]  # fmt: skip


def imports(args: argparse.Namespace) -> None:
    script = shutil.which("saas")
    if script is None:
        raise SystemExit("error: the `saas` console script is not on PATH (uv sync)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(
        APP_ENVIRONMENT="production",
        APP_DATABASE_URL="postgresql+asyncpg://u@127.0.0.1:1/none",  # never connected
        APP_REDIS_URL="redis://127.0.0.1:1/0",
        APP_JWT_SECRET=secrets.token_urlsafe(48),
        APP_LOG_FORMAT="json",
        APP_STORAGE_URL=_STORAGE_URL,
    )

    def run(code: str) -> Any:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    data = run(f"SCRIPT = {script!r}\nTRACE = False\n" + _IMPORTS)
    traced = run(f"SCRIPT = {script!r}\nTRACE = True\n" + _IMPORTS)["traced"]
    print("RSS of a fresh worker process after each step of its start-up:\n")
    print("| step | RSS MB | + MB | modules |\n|---|---:|---:|---:|")
    previous = 0.0
    for name, rss, count in data["steps"]:
        print(f"| {name} | {rss:.1f} | {rss - previous:+.1f} | {count} |")
        previous = rss
    print(f"\nPython allocations still held after all of it (tracemalloc): {traced / 2**20:.1f} MB")
    loaded = set(data["modules"])
    print("\nEach package imported alone in a fresh interpreter (with what it pulls in):\n")
    print("| package | in a worker | RSS MB | tracemalloc MB | modules |\n|---|---|---:|---:|---:|")
    for name in PACKAGES:
        try:
            rss, size, count = run(f"NAME = {name!r}\n" + _ONE)
        except subprocess.CalledProcessError:
            continue
        where = "yes" if name in loaded else "no"
        print(f"| `{name}` | {where} | {rss:.1f} | {size / 2**20:.1f} | {count} |")
    tops = sorted({m.split(".")[0] for m in data["modules"] if not m.startswith("_")})
    print(f"\n{len(data['modules'])} modules; top-level: {', '.join(tops)}")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def serve(args: argparse.Namespace) -> None:
    from bench import appglue, seed
    from bench.run import _children, _cmdline
    from bench.services import create_database, drop_database, dsn, find_services

    services = find_services()
    name = f"bench_memory_{secrets.token_hex(3)}"
    database_url = asyncio.run(create_database(services.database_url, name))
    process: subprocess.Popen[bytes] | None = None
    try:
        from app.cli import run_migrations
        from app.config import load_settings

        run_migrations(database_url)
        secret = secrets.token_urlsafe(48)
        settings = load_settings(
            environment="production",
            database_url=database_url,
            redis_url=services.redis_url,
            jwt_secret=secret,
            storage_url=_STORAGE_URL,
        )
        hasher = appglue.resolve_hasher(settings)
        seeded = asyncio.run(
            seed.seed(
                dsn(database_url),
                password_hash=hasher.hash(seed.PASSWORD),
                users=200,
                products=100,
                orders=2000,
                token_users=16,
                currency=settings.currency,
            )
        )
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "PROMETHEUS_"))}
        env.update(
            APP_ENVIRONMENT="production",
            APP_DATABASE_URL=database_url,
            APP_REDIS_URL=services.redis_url,
            APP_JWT_SECRET=secret,
            APP_LOG_FORMAT="json",
            APP_ACCESS_TOKEN_TTL_SECONDS="7200",
            APP_SMTP_PORT="1",
            APP_STORAGE_URL=_STORAGE_URL,
            **appglue.rate_limit_env(),
        )
        for item in args.set:
            key, _, value = item.partition("=")
            env[key] = value
        log = open(Path(tempfile.gettempdir()) / f"{name}.log", "wb")  # noqa: SIM115
        cmd = ["saas", "serve", "--port", str(port), "--workers", str(args.workers)]
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        workers = _wait(base, process, args.workers, _children, _cmdline)
        rows: list[tuple[str, list[float]]] = [("started", [_rss_mb(p) for p in workers])]
        rows += asyncio.run(_load(base, seeded, workers, args.requests))
        print(f"RSS of each `saas serve` worker (MB), {args.workers} workers:\n")
        print("| after | " + " | ".join(f"worker {i + 1}" for i in range(len(workers))) + " |")
        print("|---|" + "---:|" * len(workers))
        for label, values in rows:
            print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        asyncio.run(drop_database(services.database_url, name))
        services.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(
    base: str, process: subprocess.Popen[bytes], count: int, children: Any, cmdline: Any
) -> list[int]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"saas serve exited with {process.returncode}")
        workers = [p for p in children(process.pid) if "spawn_main" in cmdline(p)]
        if count == 1:
            workers = [process.pid]
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as answer:
                if answer.status == 200 and len(workers) >= count:
                    time.sleep(1)
                    return workers
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("saas serve did not start")


async def _load(
    base: str, seeded: Any, workers: list[int], requests: int
) -> list[tuple[str, list[float]]]:
    import httpx

    from bench import seed

    rows: list[tuple[str, list[float]]] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        limit = asyncio.Semaphore(16)

        async def many(make: Any, count: int) -> None:
            async def one(i: int) -> None:
                async with limit:
                    method, url, kwargs = make(i)
                    answer = await client.request(method, url, **kwargs)
                    if answer.status_code >= 400:
                        raise RuntimeError(f"{method} {url}: {answer.status_code} {answer.text}")

            await asyncio.gather(*(one(i) for i in range(count)))

        products = seeded.product_ids
        n = len(products)
        await many(lambda i: ("GET", f"/api/v1/products/{products[i % n]}", {}), requests)
        await many(lambda i: ("GET", "/api/v1/products", {"params": {"page": 1 + i % 5}}), requests)
        rows.append((f"{2 * requests:,} catalog reads", [_rss_mb(p) for p in workers]))
        tokens: list[str] = []
        for user in seeded.token_users:
            answer = await client.post(
                "/api/v1/auth/login", json={"email": user["email"], "password": seed.PASSWORD}
            )
            tokens.append(answer.json()["access_token"])
        rows.append((f"{len(tokens)} logins", [_rss_mb(p) for p in workers]))

        def auth(i: int) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}}

        await many(lambda i: ("GET", "/api/v1/users/me", auth(i)), requests)
        await many(lambda i: ("GET", "/api/v1/orders", auth(i)), requests)
        await many(
            lambda i: (
                "POST",
                "/api/v1/orders",
                {
                    **auth(i),
                    "json": {"items": [{"product_id": products[i % len(products)], "quantity": 1}]},
                },
            ),
            requests // 4,
        )
        rows.append(("users/me, order lists, orders", [_rss_mb(p) for p in workers]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("imports", help="a worker's imports: RSS and tracemalloc by package")
    two = sub.add_parser("serve", help="RSS of `saas serve` workers while they serve")
    two.add_argument("--workers", type=int, default=2)
    two.add_argument("--requests", type=int, default=2000)
    two.add_argument("--set", action="append", default=[], metavar="APP_X=VALUE")
    args = parser.parse_args()
    imports(args) if args.command == "imports" else serve(args)


if __name__ == "__main__":
    main()
