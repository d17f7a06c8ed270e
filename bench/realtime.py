"""Real-time events under load (issue 15): idle WebSockets and fan-out latency.

Two scenarios against `saas serve` on a fresh database:

- `ws_idle`: N idle, authenticated WebSocket connections (default 5,000) on one worker
  (`--workers 1`). Reports the server's memory per connection (RSS growth / N; target
  <= 20 KB), its CPU while nobody calls it, and `GET /health`'s p99 with and without them
  (target: within 10 %), measured by `wrk` in
  `--cycles` alternations of several samples each (the p99 drifts by more than 10% between
  minutes on a 2-core machine), the pooled medians compared.
- `ws_fanout`: C connected clients (default 1,000: one per user, plus a few admins that see every
  event) while orders are placed through the API at R per second (default 50), against
  `--fanout-workers` workers (default: as many as `saas serve` starts here, one per CPU; the
  clients land on any of them and each event crosses processes through Redis). Reports the
  latency from the event's `at` (stamped inside the order's transaction, when the order records
  its event, after taking its stock) to its receipt, p50 and p99 (target p99 <= 100 ms), split
  into commit to Redis and Redis to receipt, and events lost (expected deliveries, by the
  audience rules, that never arrived; target 0) and duplicated.

    python -m bench.realtime                      # the real run (the lead's, on a quiet machine)
    python -m bench.realtime --idle 50 --clients 20 --rate 5 --duration 3   # a quick check

Services as `bench.run` finds them (APP_BENCH_DATABASE_URL / APP_BENCH_REDIS_URL, else local,
else embedded). Results: a Markdown file under bench/results/ (or --output).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import httpx

from bench.services import create_database, drop_database, dsn, find_services
from bench.wrk import ensure_wrk
from bench.ws_clients import HeldSockets, open_sockets

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.realtime", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--idle", type=int, default=5000, help="idle WebSocket connections (5000)")
    parser.add_argument("--clients", type=int, default=1000, help="fan-out clients (1000)")
    parser.add_argument(
        "--admins", type=int, default=10, help="of which admins, who see every event (10)"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="orders per second (50)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of orders (30)")
    parser.add_argument(
        "--health-requests", type=int, default=3000, help="/health requests per p99 sample"
    )
    parser.add_argument(
        "--health-samples",
        type=int,
        default=5,
        help="/health p99 samples on each side of ws_idle (their median is compared)",
    )
    parser.add_argument(
        "--cycles", type=int, default=5, help="ws_idle: alternations without/with the sockets"
    )
    parser.add_argument(
        "--fanout-workers",
        type=int,
        default=None,
        help="ws_fanout: server workers (default: one per CPU, as `saas serve` starts)",
    )
    parser.add_argument("--scenarios", default="ws_idle,ws_fanout", help="ws_idle,ws_fanout")
    parser.add_argument("--output", type=Path, default=None, help="results file (Markdown)")
    parser.add_argument("--embedded", action="store_true", help="skip the local services")
    args = parser.parse_args(argv)
    if args.fanout_workers is None:
        from app.config import available_cpus

        args.fanout_workers = available_cpus()
    return args


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/events/ws"

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) if match else 0

    def cpu_seconds(self) -> float:
        """User and system CPU the server process has used so far (`/proc/<pid>/stat`)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def idle_cpu_share(self, seconds: float) -> float:
        """The share of one core the server uses over `seconds` in which nobody calls it."""
        before = self.cpu_seconds()
        await asyncio.sleep(seconds)
        return (self.cpu_seconds() - before) / seconds

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_server(env: dict[str, str], port: int, log: Path, workers: int = 1) -> Server:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--workers",
                str(workers),
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"saas serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(server.url + "/ready", timeout=2).status_code == 200:
                if workers > 1:
                    time.sleep(3)  # the first worker answered: let the others start too
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError("saas serve did not become ready")


async def seed(database_url: str, users: int, admins: int) -> tuple[list[dict[str, Any]], str]:
    """Users (plain ones, then admins) and one product with stock for every order."""
    from app.core.database import uuid7

    conn = await asyncpg.connect(dsn(database_url))
    try:
        rows = []
        for number in range(users + admins):
            rows.append(
                (
                    uuid7(),
                    f"rt{number}-{secrets.token_hex(3)}@example.com",
                    "not-a-hash",
                    f"Realtime {number}",
                    "admin" if number >= users else "user",
                )
            )
        await conn.executemany(
            "INSERT INTO users (id, email, password_hash, full_name, role, is_active, "
            "is_verified, token_version) VALUES ($1, $2, $3, $4, $5, true, true, 0)",
            rows,
        )
        product = uuid7()
        await conn.execute(
            "INSERT INTO products (id, sku, name, price_cents, stock, is_active) "
            "VALUES ($1, 'RT-BENCH-1', 'Realtime bench product', 100, 100000000, true)",
            product,
        )
    finally:
        await conn.close()
    return [{"id": r[0], "role": r[4]} for r in rows], str(product)


def minter(env: dict[str, str]) -> Any:
    from app.config import load_settings
    from app.core.database import uuid7
    from app.core.security import Tokens

    tokens = Tokens(
        load_settings(
            _env_file=None,
            environment="test",
            database_url=env["APP_DATABASE_URL"],
            redis_url=env["APP_REDIS_URL"],
            jwt_secret=env["APP_JWT_SECRET"],
            storage_url=env["APP_STORAGE_URL"],
            access_token_ttl_seconds=7200,
        )
    )

    def mint(user: dict[str, Any]) -> str:
        token, _ = tokens.encode(
            type="access", subject=user["id"], session_id=uuid7(), version=0, role=user["role"]
        )
        return token

    return mint


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def health_p99(url: str, requests: int) -> float:
    """p99 of `GET /health` in ms, 8 at a time (wrk when installed, else httpx)."""
    if shutil.which("wrk") and requests >= 1000:
        seconds = max(3, requests // 1000)
        wrk = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            "-c8",
            f"-d{seconds}s",
            "--latency",
            url + "/health",
            stdout=asyncio.subprocess.PIPE,
        )
        out = (await wrk.communicate())[0].decode()
        match = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url) as http:
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                response = await http.get("/health")
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200

        await asyncio.gather(*(worker() for _ in range(8)))
    return percentile(latencies, 99)


async def health_p99_samples(url: str, requests: int, samples: int = 3) -> list[float]:
    """Several `health_p99` samples, one after the other, after a discarded warm-up batch (a
    first sample on a fresh server also pays for its first requests: it read 3x the second).
    One 3-second sample of a p99 moved by up to 40% from one to the next on this machine, so
    the median of a few is compared, and every sample is printed."""
    await health_p99(url, max(200, requests // 3))
    return [await health_p99(url, requests) for _ in range(samples)]


class Receipt(NamedTuple):
    """An event as one fan-out client got it."""

    order_id: str
    name: str
    received: float  # this process's clock (time.time())
    at: str  # when the order recorded it (ISO 8601)
    event_id: str  # the stream id, whose first part is Redis's clock in ms


@dataclass
class Results:
    lines: list[str] = field(default_factory=list)


def cpu_times() -> list[int]:
    """The machine's CPU counters (`/proc/stat`: user, nice, system, idle, iowait, irq,
    softirq, steal, ...), in clock ticks."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


@contextlib.contextmanager
def no_garbage_collection() -> Iterator[None]:
    """The cyclic collector off (what exists now frozen out of its reach), back on at the end
    whatever happens."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time the hypervisor gave to other guests in between: a
    p99 measured while it is high says more about the neighbours than about the server."""
    spent = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(spent[:8])
    return spent[7] / total if total and len(spent) > 7 else 0.0


async def ws_idle(
    server: Server, users: list[dict[str, Any]], mint: Any, args: argparse.Namespace, out: Results
) -> None:
    """Memory and idle CPU per connection, and `/health`'s p99 without and with the connections
    in `--cycles` alternations (close them, sample, open them again, sample): the p99 of this
    machine drifts between minutes by more than the 10% compared, so each cycle's pair is
    measured minutes apart at most, and the pooled samples of all cycles are compared.

    The sockets are held by a separate client process at the lowest CPU priority
    (`bench.ws_clients`): the server's work for them (its heartbeats, the answers it reads,
    the hub's re-checks) is measured, and the clients' own work, which in production happens
    on other machines, is scheduled after the server's and `wrk`'s."""
    tokens = [mint(users[number % len(users)]) for number in range(args.idle)]
    samples: dict[str, list[list[float]]] = {"without": [], "with": []}
    steal: dict[str, list[float]] = {"without": [], "with": []}
    first: dict[str, float] = {}

    async def sample(side: str) -> None:
        before = cpu_times()
        samples[side].append(
            await health_p99_samples(server.url, args.health_requests, args.health_samples)
        )
        steal[side].append(steal_share(before, cpu_times()))

    for cycle in range(args.cycles):
        await sample("without")
        await asyncio.sleep(1)
        if cycle == 0:
            first["idle_before"] = await server.idle_cpu_share(10)
            first["rss_before"] = server.rss_kb()
        started = time.monotonic()
        held = await HeldSockets.open(server.ws_url, tokens, nice=19)
        if cycle == 0:
            first["opened_in"] = time.monotonic() - started
            first["opened"] = held.count
        await asyncio.sleep(3)
        if cycle == 0:
            first["rss_after"] = server.rss_kb()
            first["idle_after"] = await server.idle_cpu_share(10)
        await sample("with")
        await held.close()
        await asyncio.sleep(2)
    per_connection = (first["rss_after"] - first["rss_before"]) / max(1, first["opened"])
    without, with_them = samples["without"], samples["with"]
    pooled_without = percentile([v for cycle in without for v in cycle], 50)
    pooled_with = percentile([v for cycle in with_them for v in cycle], 50)
    change = (pooled_with / pooled_without - 1) * 100 if pooled_without else float("nan")
    # Each cycle's own change (its two medians, a minute apart): their spread shows the noise.
    changes = [
        (percentile(b, 50) / percentile(a, 50) - 1) * 100
        for a, b in zip(without, with_them, strict=True)
    ]
    out.lines += [
        "## ws_idle: idle WebSocket connections on one worker",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| connections | {first['opened']:.0f} (opened in {first['opened_in']:.1f} s) "
        f"| {args.idle} |",
        f"| server RSS before / after | {first['rss_before'] / 1024:.1f} MiB / "
        f"{first['rss_after'] / 1024:.1f} MiB | |",
        f"| memory per connection | {per_connection:.1f} KB | <= 20 KB |",
        f"| server CPU over 10 s with no request, without / with them | "
        f"{first['idle_before'] * 100:.1f}% / {first['idle_after'] * 100:.1f}% of a core | |",
        f"| /health p99 without / with them (median of all {len(without)} x "
        f"{args.health_samples} samples) | {pooled_without:.2f} ms / {pooled_with:.2f} ms "
        f"({change:+.0f} %) | within 10 % |",
        f"| each cycle's change (median, range) | {percentile(changes, 50):+.0f} % "
        f"({min(changes):+.0f} % to {max(changes):+.0f} %) | |",
        f"| CPU stolen by the hypervisor while sampling, without / with them | "
        f"{percentile(steal['without'], 50) * 100:.0f}% / "
        f"{percentile(steal['with'], 50) * 100:.0f}% (median of the cycles) | |",
    ]
    for number, (before, after) in enumerate(zip(without, with_them, strict=True), 1):
        out.lines.append(
            f"| cycle {number}: samples without / with them | "
            f"{', '.join(f'{v:.2f}' for v in before)} / "
            f"{', '.join(f'{v:.2f}' for v in after)} ms ({changes[number - 1]:+.0f} %) | |"
        )
    out.lines.append("")


async def ws_fanout(
    server: Server,
    users: list[dict[str, Any]],
    product: str,
    mint: Any,
    args: argparse.Namespace,
    out: Results,
) -> None:
    plain = [user for user in users if user["role"] == "user"][: max(0, args.clients - args.admins)]
    admins = [user for user in users if user["role"] == "admin"][: args.admins]
    clients = plain + admins
    sockets = await open_sockets(server.ws_url, [mint(user) for user in clients])
    received: list[list[Receipt]] = [[] for _ in clients]

    async def listen(index: int, ws: Any) -> None:
        try:
            async for raw in ws:
                now = time.time()
                message = json.loads(raw)
                if message.get("type") == "event":
                    received[index].append(
                        Receipt(
                            message["data"]["id"],
                            message["event"],
                            now,
                            message["at"],
                            message["id"],
                        )
                    )
        except Exception:
            return

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
    placed: list[tuple[str, int]] = []  # (order id, index of its owner among the clients)
    failures = 0
    tokens = [mint(user) for user in plain]
    # No cyclic garbage collection in this process while it measures: a full one over its
    # 1,000 clients paused it for 170-330 ms, and every event that arrived meanwhile was
    # counted that much later (gc.callbacks in this process, 2026-12-07).
    with no_garbage_collection():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            interval = 1 / args.rate
            total = int(args.duration * args.rate)
            start = time.monotonic()
            pending: set[asyncio.Task[None]] = set()

            async def place(number: int) -> None:
                nonlocal failures
                owner = number % len(plain)
                response = await http.post(
                    "/api/v1/orders",
                    json={"items": [{"product_id": product, "quantity": 1}]},
                    headers={"Authorization": f"Bearer {tokens[owner]}"},
                )
                if response.status_code == 201:
                    placed.append((response.json()["id"], owner))
                else:
                    failures += 1

            for number in range(total):
                delay = start + number * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(place(number))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)
            elapsed = time.monotonic() - start
        await asyncio.sleep(3)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    latencies: list[float] = []
    # The two legs of each delivery: commit to Redis (the event's id is the stream id Redis
    # gave it, its time in ms) and Redis to receipt (the hub's read, the fan-out, the socket).
    to_redis: list[float] = []
    from_redis: list[float] = []
    lost = duplicates = 0
    admin_indexes = range(len(plain), len(clients))
    for order_id, owner in placed:
        for index in (owner, *admin_indexes):
            hits = [
                r for r in received[index] if r.order_id == order_id and r.name == "order.created"
            ]
            if not hits:
                lost += 1
                continue
            duplicates += len(hits) - 1
            first = hits[0]
            at = dt.datetime.fromisoformat(first.at.replace("Z", "+00:00")).timestamp()
            latencies.append((first.received - at) * 1000)
            stored = int(first.event_id.split("-", 1)[0]) / 1000
            to_redis.append((stored - at) * 1000)
            from_redis.append((first.received - stored) * 1000)
    foreign = sum(
        1
        for index in range(len(plain))
        for receipt in received[index]
        if not any(o == receipt.order_id and owner == index for o, owner in placed)
    )
    out.lines += [
        "## ws_fanout: commit to receipt",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| server | `saas serve --workers {args.fanout_workers}` | |",
        f"| clients | {len(sockets)} ({len(admins)} admins see every event) | {args.clients} |",
        f"| orders placed | {len(placed)} in {elapsed:.1f} s ({len(placed) / elapsed:.1f}/s), "
        f"{failures} failed | {args.rate:g}/s |",
        f"| deliveries expected | {len(placed) * (1 + len(admins))} | |",
        f"| latency p50 / p99 / max | {percentile(latencies, 50):.1f} / "
        f"{percentile(latencies, 99):.1f} / {max(latencies, default=float('nan')):.1f} ms "
        "| p99 <= 100 ms |",
        f"| of which commit to Redis / Redis to receipt, p50 and p99 | "
        f"{percentile(to_redis, 50):.1f}, {percentile(to_redis, 99):.1f} / "
        f"{percentile(from_redis, 50):.1f}, {percentile(from_redis, 99):.1f} ms | |",
        f"| lost / duplicated / another user's | {lost} / {duplicates} / {foreign} | 0 / 0 / 0 |",
        "",
    ]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """Run a scenario on uvloop, as the server runs: the clients' own event loop adds its delays
    to every latency measured here, and the default loop's are larger."""
    import uvloop

    uvloop.run(scenario)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from app.cli import run_migrations
    from app.dev import free_port

    wanted = {name.strip() for name in args.scenarios.split(",") if name.strip()}
    if "ws_idle" in wanted:
        # The /health p99 beside the sockets must come from another process: measured from
        # this one, whose event loop holds the 5,000 client sockets, it read 7 to 22 ms
        # against wrk's 2.7 ms.
        ensure_wrk()
    started = dt.datetime.now(dt.UTC)
    out = Results(
        [
            f"# Real-time events bench, {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"`python -m bench.realtime {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f" on {os.cpu_count()} CPUs.",
            "",
        ]
    )
    services = find_services(embedded=args.embedded)
    name = f"bench_rt_{started:%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}.log"
    failed = False
    try:
        database_url = asyncio.run(create_database(services.database_url, name))
        try:
            run_migrations(database_url)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "PROMETHEUS_"))}
            env.update(
                APP_ENVIRONMENT="production",
                APP_DATABASE_URL=database_url,
                APP_REDIS_URL=services.redis_url,
                APP_JWT_SECRET=secrets.token_urlsafe(48),
                APP_LOG_LEVEL="WARNING",
                APP_LOG_FORMAT="json",
                APP_RATE_LIMIT_ENABLED="false",
                APP_ACCESS_TOKEN_TTL_SECONDS="7200",
                APP_SMTP_PORT=str(free_port()),
                # Required in production; nothing here touches an image (the S3 client is made
                # on first use), so nothing needs to listen there.
                APP_STORAGE_URL=f"s3://bench-media?endpoint=http://127.0.0.1:{free_port()}",
                APP_DB_POOL_SIZE="10",
            )
            users, product = asyncio.run(seed(database_url, max(args.clients, 100), args.admins))
            mint = minter(env)
            if "ws_idle" in wanted:
                print(f"bench.realtime: ws_idle with {args.idle} connections", flush=True)
                server = start_server(env, free_port(), log)
                try:
                    run(ws_idle(server, users, mint, args, out))
                finally:
                    server.stop()
            if "ws_fanout" in wanted:
                print(
                    f"bench.realtime: ws_fanout with {args.clients} clients at {args.rate:g}/s "
                    f"on {args.fanout_workers} worker(s)",
                    flush=True,
                )
                server = start_server(env, free_port(), log, workers=args.fanout_workers)
                try:
                    run(ws_fanout(server, users, product, mint, args, out))
                finally:
                    server.stop()
        finally:
            asyncio.run(drop_database(services.database_url, name))
    except Exception as exc:
        failed = True
        out.lines += [f"**the run stopped early**: {type(exc).__name__}: {exc}", ""]
        import traceback

        traceback.print_exc()
    finally:
        services.stop()
    path = args.output or RESULTS / f"realtime-{started:%Y-%m-%d}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out.lines) + "\n")
    print("\n".join(out.lines))
    print(f"bench.realtime: results written to {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
