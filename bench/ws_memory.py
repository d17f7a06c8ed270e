"""Where an idle WebSocket's memory goes: the server in process, under `tracemalloc`.

`bench.realtime` measures the RSS growth of a real `saas serve`; this explains it. The app runs
under uvicorn in this process, configured as `saas serve` configures it, with `tracemalloc`
on; a client subprocess opens N authenticated, idle WebSockets; the Python allocations made
between the two snapshots are grouped by where they were made, and the live asyncio tasks and
gc-tracked objects are counted by kind.

    uv run python -m bench.ws_memory --connections 2000

Services as `bench.run` finds them (APP_BENCH_DATABASE_URL / APP_BENCH_REDIS_URL, else local);
a fresh database is made and dropped. tracemalloc slows the server and adds its own overhead to
the RSS: read the RSS here as a rough check, the per-connection bytes of Python allocations as
the breakdown.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import gc
import os
import re
import secrets
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from bench.realtime import minter, seed
from bench.services import create_database, drop_database, find_services
from bench.ws_clients import HeldSockets


def _rss_kb() -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def _type_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


_OWNERS = (
    ("/src/app/features/events/", "app: events (router, hub)"),
    ("/src/app/", "app: other"),
    ("/site-packages/uvicorn/", "uvicorn"),
    ("/site-packages/websockets/", "websockets (handshake, parser)"),
    ("/site-packages/starlette/", "starlette"),
    ("/site-packages/fastapi/", "fastapi"),
    ("/site-packages/pydantic", "pydantic"),
)


def _owner(traceback: tracemalloc.Traceback) -> str:
    for frame in reversed(traceback):  # innermost first
        for marker, owner in _OWNERS:
            if marker in frame.filename:
                return owner
    return "event loop (callbacks from C: transports, timers, task steps)"


def _coroutines() -> collections.Counter[str]:
    """Bytes of the live coroutines (each holds its frame) by function."""
    sizes: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        if type(o).__name__ in ("coroutine", "async_generator", "generator"):
            sizes[f"{type(o).__name__} {o.__qualname__}"] += sys.getsizeof(o)
    return sizes


def _task_names() -> collections.Counter[str]:
    names: collections.Counter[str] = collections.Counter()
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        names[getattr(coro, "__qualname__", type(coro).__name__)] += 1
    return names


async def measure(port: int, tokens: list[str], warmup: list[str], frames: int) -> list[str]:
    import uvicorn

    from app.cli import proxy_options, websocket_options
    from app.config import get_settings

    settings = get_settings()
    config = uvicorn.Config(
        "app.main:app",
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        **proxy_options(settings),
        **websocket_options(settings),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event
        await asyncio.sleep(0.1)
    url = f"ws://127.0.0.1:{port}/api/v1/events/ws"
    n = len(tokens)
    try:
        # A first batch opened and closed: what the first connection loads or caches is not
        # counted against the idle ones.
        await (await HeldSockets.open(url, warmup)).close()
        await asyncio.sleep(1)
        gc.collect()
        tasks_before, types_before, rss_before = _task_names(), _type_counts(), _rss_kb()
        coros_before = _coroutines()
        tracemalloc.start(frames)
        before = tracemalloc.take_snapshot()
        client = await HeldSockets.open(url, tokens)
        await asyncio.sleep(2)
        gc.collect()
        after = tracemalloc.take_snapshot()
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        tasks_after, types_after, rss_after = _task_names(), _type_counts(), _rss_kb()
        coros_after = _coroutines()
        await client.close()
    finally:
        server.should_exit = True
        await serving

    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    lines = [
        f"connections: {n}",
        f"RSS growth: {(rss_after - rss_before) / n:.1f} KB per connection (tracemalloc on)",
        f"traced at the end: {traced / 1024 / 1024:.1f} MiB",
    ]
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    lines.append(f"Python allocations: {total / n:.0f} B per connection")
    lines += [
        "",
        "## by owner: the innermost frame outside the standard library (B per connection)",
    ]
    owners: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        owners[_owner(stat.traceback)] += stat.size_diff
    for owner, size in owners.most_common():
        lines.append(f"{size / n:8.0f}  {owner}")
    lines += ["", "## by file (B per connection)"]
    for stat in after.compare_to(before, "filename")[:25]:
        if abs(stat.size_diff) / n >= 16:
            frame = stat.traceback[0]
            lines.append(f"{stat.size_diff / n:8.0f}  {stat.count_diff / n:6.1f} blocks  {frame}")
    lines += ["", "## by line (B per connection)"]
    for stat in after.compare_to(before, "lineno")[:40]:
        if abs(stat.size_diff) / n >= 16:
            frame = stat.traceback[0]
            lines.append(f"{stat.size_diff / n:8.0f}  {stat.count_diff / n:6.1f} blocks  {frame}")
    if frames > 1:
        lines += ["", "## by traceback, top 15 (B per connection)"]
        for stat in after.compare_to(before, "traceback")[:15]:
            lines.append(f"{stat.size_diff / n:8.0f}  {stat.count_diff / n:6.1f} blocks")
            lines += [f"          {frame}" for frame in stat.traceback.format()[-2 * frames :]]
    lines += ["", "## asyncio tasks per connection, by coroutine"]
    for name in sorted(set(tasks_after) | set(tasks_before)):
        diff = tasks_after[name] - tasks_before[name]
        if diff:
            lines.append(f"{diff / n:6.2f}  {name}")
    lines += ["", "## live coroutines (with their frames) per connection: B, function"]
    coro_diffs = {k: coros_after[k] - coros_before[k] for k in set(coros_after) | set(coros_before)}
    lines.append(f"{sum(coro_diffs.values()) / n:6.0f}  (all)")
    for name, diff in sorted(coro_diffs.items(), key=lambda item: -item[1]):
        if diff / n >= 16:
            lines.append(f"{diff / n:6.0f}  {name}")
    lines += ["", "## gc-tracked objects per connection, by type"]
    diffs = {t: types_after[t] - types_before[t] for t in set(types_after) | set(types_before)}
    for name, diff in sorted(diffs.items(), key=lambda item: -item[1])[:30]:
        if diff / n >= 0.5:
            lines.append(f"{diff / n:6.2f}  {name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_memory", description=__doc__)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=30, help="tracemalloc frames per trace")
    args = parser.parse_args(argv)

    from app.cli import run_migrations
    from app.dev import free_port

    services = find_services()
    name = f"bench_wsmem_{dt.datetime.now(dt.UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"
    try:
        database_url = asyncio.run(create_database(services.database_url, name))
        try:
            run_migrations(database_url)
            env = {
                "APP_ENVIRONMENT": "production",
                "APP_DATABASE_URL": database_url,
                "APP_REDIS_URL": services.redis_url,
                "APP_JWT_SECRET": secrets.token_urlsafe(48),
                "APP_LOG_LEVEL": "WARNING",
                "APP_LOG_FORMAT": "json",
                "APP_RATE_LIMIT_ENABLED": "false",
                "APP_ACCESS_TOKEN_TTL_SECONDS": "7200",
                "APP_SMTP_PORT": str(free_port()),
                "APP_STORAGE_URL": f"s3://bench-media?endpoint=http://127.0.0.1:{free_port()}",
                "APP_DB_POOL_SIZE": "10",
            }
            for key in [k for k in os.environ if k.startswith(("APP_", "PROMETHEUS_"))]:
                del os.environ[key]
            os.environ.update(env)
            users, _ = asyncio.run(seed(database_url, 100, 10))
            mint = minter(env)
            tokens = [mint(users[i % len(users)]) for i in range(args.connections)]
            warmup = [mint(users[i % len(users)]) for i in range(200)]
            import uvloop  # as uvicorn's loop="auto" picks it

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                lines = runner.run(measure(free_port(), tokens, warmup, args.frames))
        finally:
            asyncio.run(drop_database(services.database_url, name))
    finally:
        services.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
