"""`make bench`: seed, serve, load, compare with the floor, write the results table.

One command on a machine with nothing running: it finds or starts PostgreSQL and Redis, creates a
fresh `bench_*` database, runs the migrations, seeds 10k users, 1k products and 100k orders, then
for each worker count measures the floor (bench/floor.py) and the API (`saas serve`, production
settings) with wrk at 64 connections, and writes `bench/results/<date>.md`. Everything it started
is stopped and its database dropped at the end. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import fnmatch
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(ROOT))

from bench import appglue, profile, report, seed, wrk  # noqa: E402
from bench.scenarios import FLOORS, HEALTH_PROBE_CONNECTIONS, SCENARIOS, Scenario  # noqa: E402
from bench.services import (  # noqa: E402
    create_database,
    drop_database,
    dsn,
    find_services,
    server_facts,
)

RESULTS = ROOT / "bench" / "results"
FLOOR_PREFIX = "bench:floor:product:"


# --------------------------------------------------------------------------- processes


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Server:
    """A uvicorn server (the API or the floor) in its own process group."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as answer:
                    if answer.status == 200 and self._workers_up():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /health within {timeout_s:.0f}s")

    def _workers_up(self) -> bool:
        expected = int(self.cmd[self.cmd.index("--workers") + 1]) if "--workers" in self.cmd else 1
        return expected == 1 or len(self.worker_pids()) >= expected

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes; with one worker, the server process itself."""
        assert self.process is not None
        workers = [p for p in _children(self.process.pid) if "spawn_main" in _cmdline(p)]
        return workers or [self.process.pid]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            # Our own child's process group (start_new_session): its workers and nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def take_errors(self, keep: Path | None) -> list[str]:
        """Error lines the server logged since the last call (the log is then truncated)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        errors = [
            line
            for line in lines
            if '"error"' in line or '"critical"' in line or "Traceback" in line
        ]
        errors = [line for line in errors if _is_error_line(line)]
        if errors and keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.write_text("\n".join(errors[:50]) + "\n")
        with open(self.log_path, "w"):
            pass  # the server appends (O_APPEND): truncating is safe
        return errors


def _is_error_line(line: str) -> bool:
    try:
        level = str(json.loads(line).get("level", "")).lower()
    except (json.JSONDecodeError, AttributeError):
        return "Traceback" in line
    return level in ("error", "critical", "exception")


class RssSampler:
    """Peak RSS of each worker process while a scenario runs (sampled every 0.25 s)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.server.worker_pids():
                self.peak[pid] = max(self.peak.get(pid, 0), _rss_kb(pid))
            self._stop.wait(0.25)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- results


@dataclass
class Outcome:
    scenario: Scenario
    workers: int
    result: wrk.WrkResult | None = None
    skipped: str = ""
    notes: list[str] = field(default_factory=list)
    rss_kb: dict[int, int] = field(default_factory=dict)
    server_errors: int = 0
    companion: wrk.WrkResult | None = None  # the login load beside health_under_login
    profile_files: list[Path] = field(default_factory=list)
    variant: str = ""  # the name of the --variant the API ran with ("" without variants)


@dataclass
class Run:
    args: argparse.Namespace
    started: dt.datetime
    raw_dir: Path
    facts: dict[str, str] = field(default_factory=dict)
    settings_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seed: seed.SeedResult | None = None
    verify: appglue.VerifyCost | None = None
    argon2_params: str = ""
    hasher: str = ""
    outcomes: list[Outcome] = field(default_factory=list)
    floors: list[Outcome] = field(default_factory=list)
    variant: str = ""  # the variant being measured now

    def label(self, workers: int, name: str) -> str:
        return f"{self.variant + '-' if self.variant else ''}{workers}w-{name}"


# --------------------------------------------------------------------------- load


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def write_lua_data(path: Path, data: dict[str, Any]) -> Path:
    """The data file the Lua scripts load (tokens, ids, logins), as a Lua table."""

    def render(value: Any) -> str:
        if isinstance(value, str):
            return _lua_string(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, list):
            return "{" + ",".join(render(v) for v in value) + "}"
        if isinstance(value, dict):
            return "{" + ",".join(f"[{_lua_string(k)}]={render(v)}" for k, v in value.items()) + "}"
        raise TypeError(type(value))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("return " + render(data) + "\n")
    return path


def run_wrk(
    run: Run,
    base_url: str,
    scenario: Scenario,
    data_file: Path,
    *,
    label: str,
    duration_s: int,
    connections: int | None = None,
    threads: int | None = None,
) -> wrk.WrkResult:
    cmd = wrk.command(
        base_url,
        scenario.script,
        duration_s=duration_s,
        connections=connections or run.args.connections,
        threads=threads or run.args.threads,
        timeout_s=scenario.timeout_s,
    )
    process = wrk.start(cmd, _wrk_env(scenario, data_file))
    return wrk.finish(process, run.raw_dir / f"{label}.txt")


def _wrk_env(scenario: Scenario, data_file: Path) -> dict[str, str]:
    return {
        "BENCH_DATA": str(data_file),
        "BENCH_PATH": scenario.path,
        "BENCH_AUTH": ("key" if scenario.api_key else "1") if scenario.auth else "0",
        "BENCH_IF_NONE_MATCH": "1" if scenario.if_none_match else "0",
        "BENCH_NONCE": secrets.token_hex(6),
    }


def measure(run: Run, server: Server, scenario: Scenario, data_file: Path, workers: int) -> Outcome:
    outcome = Outcome(scenario, workers, variant=run.variant)
    label = run.label(workers, scenario.name)
    print(f"  {label}: warm-up {run.args.warmup}s, run {run.args.duration}s", flush=True)
    if run.args.warmup > 0:
        run_wrk(
            run,
            server.base_url,
            scenario,
            data_file,
            label=label + "-warmup",
            duration_s=run.args.warmup,
        )
        server.take_errors(None)
    with RssSampler(server) as sampler:
        outcome.result = run_wrk(
            run, server.base_url, scenario, data_file, label=label, duration_s=run.args.duration
        )
    outcome.rss_kb = sampler.peak
    _collect_errors(run, server, outcome, label)
    _print_result(outcome)
    if any(fnmatch.fnmatchcase(scenario.name, p) for p in run.args.profile_patterns):
        outcome.profile_files = _profile(run, server, scenario, data_file, label)
    return outcome


def _profile(
    run: Run, server: Server, scenario: Scenario, data_file: Path, label: str
) -> list[Path]:
    """The scenario once more with py-spy on every worker (after the measured run, so the
    measured numbers are not perturbed by the sampler)."""
    print(f"  {label}: profiling with py-spy for {run.args.duration}s", flush=True)
    files, samplers = [], []
    for pid in server.worker_pids():
        output = run.raw_dir / f"{label}-profile-{pid}.txt"
        sampler = profile.start(pid, run.args.duration, output)
        if sampler is None:
            run.notes.append("py-spy is not installed: no profile taken")
            return []
        files.append(output)
        samplers.append(sampler)
    run_wrk(run, server.base_url, scenario, data_file, label=label + "-profiled",
            duration_s=run.args.duration)  # fmt: skip
    for sampler in samplers:
        try:
            sampler.wait(timeout=run.args.duration + 30)
        except subprocess.TimeoutExpired:
            sampler.terminate()
    server.take_errors(None)
    return files


def measure_health_under_login(
    run: Run, server: Server, scenario: Scenario, login: Scenario, data_file: Path, workers: int
) -> Outcome:
    """/health at a few connections while 64 connections of logins keep every core busy."""
    outcome = Outcome(scenario, workers, variant=run.variant)
    label = run.label(workers, scenario.name)
    print(f"  {label}: logins for {run.args.duration + 2}s, /health for {run.args.duration}s")
    login_cmd = wrk.command(
        server.base_url,
        login.script,
        duration_s=run.args.duration + 2,
        connections=run.args.connections,
        threads=run.args.threads,
        timeout_s=login.timeout_s,
    )
    login_process = wrk.start(login_cmd, _wrk_env(login, data_file))
    try:
        time.sleep(2)  # let the logins fill the cores first
        with RssSampler(server) as sampler:
            outcome.result = run_wrk(
                run,
                server.base_url,
                scenario,
                data_file,
                label=label,
                duration_s=run.args.duration,
                connections=HEALTH_PROBE_CONNECTIONS,
                threads=1,
            )
    finally:
        outcome.companion = wrk.finish(login_process, run.raw_dir / f"{label}-logins.txt")
    outcome.rss_kb = sampler.peak
    outcome.notes.append(
        f"/health at {HEALTH_PROBE_CONNECTIONS} connections beside logins at "
        f"{run.args.connections}: {outcome.companion.rps:.1f} logins/s, "
        f"{outcome.companion.errors} login errors"
    )
    _collect_errors(run, server, outcome, label)
    _print_result(outcome)
    return outcome


def _collect_errors(run: Run, server: Server, outcome: Outcome, label: str) -> None:
    errors = server.take_errors(run.raw_dir / f"{label}-server-errors.log")
    outcome.server_errors = len(errors)
    if errors:
        outcome.notes.append(
            f"{len(errors)} error lines in the server log (raw/{label}-server-errors.log)"
        )


def _print_result(outcome: Outcome) -> None:
    r = outcome.result
    if r is None:
        return
    print(
        f"    {r.rps:9.1f} req/s  p50 {report.fmt_ms(r.p50_ms)}  p99 {report.fmt_ms(r.p99_ms)}  "
        f"errors {r.errors}" + (f"  ({r.error_sample[:120]!r})" if r.errors else ""),
        flush=True,
    )


# --------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=30, help="seconds per scenario (30)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up seconds per scenario (5)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--workers", default="1,2", help="server worker counts, e.g. 1,2 (1,2)")
    parser.add_argument(
        "--scenarios",
        default="",
        help="comma-separated names (shell patterns: order_*) to run (default all): "
        + ", ".join(s.name for s in SCENARIOS),
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--products", type=int, default=1_000)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--token-users", type=int, default=64, help="users logged in for tokens")
    parser.add_argument(
        "--cursor-depth",
        type=int,
        default=50_000,
        help="rows before the deep order page of order_list_*_deep (50000; a multiple of 20)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="APP_X=VALUE",
        help="extra setting for the API server (repeatable), stated in the results",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="run the API scenarios once more per variant, with these extra settings (APP_* or "
        "OTEL_*), side by side in the results; e.g. 'otel-10:APP_OTEL_ENABLED=true,"
        "OTEL_TRACES_SAMPLER=parentbased_traceidratio,OTEL_TRACES_SAMPLER_ARG=0.1'",
    )
    parser.add_argument(
        "--otel-variants",
        action="store_true",
        help="shorthand: variants otel-off, otel-100 (every request traced) and otel-10 (10%% "
        "sampled), spans exported over OTLP/HTTP to a local sink (bench/otlp_sink.py)",
    )
    parser.add_argument("--output", type=Path, help="results file (bench/results/<date>.md)")
    parser.add_argument(
        "--embedded", action="store_true", help="use embedded servers even if local ones answer"
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--profile",
        default="",
        metavar="SCENARIOS",
        help="scenarios (names or patterns) to run once more under py-spy, summarised in the "
        "results; e.g. 'users_me,order_*'",
    )
    parser.add_argument("--target-workers", type=int, default=2, help="targets apply here (2)")
    args = parser.parse_args(argv)
    args.profile_patterns = [p.strip() for p in args.profile.split(",") if p.strip()]
    args.worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    wanted = [w.strip() for w in args.scenarios.split(",") if w.strip()]
    args.selected = [
        s for s in SCENARIOS if not wanted or any(fnmatch.fnmatchcase(s.name, w) for w in wanted)
    ]
    if not args.selected:
        parser.error(f"no scenario matches {args.scenarios!r}")
    specs = list(args.variant)
    if args.otel_variants:
        specs = [*OTEL_VARIANTS, *specs]
    args.variants = [parse_variant(spec, parser) for spec in specs] or [("", {})]
    if len({name for name, _ in args.variants}) != len(args.variants):
        parser.error("variant names must be unique")
    return args


OTEL_ON = "APP_OTEL_ENABLED=true,OTEL_TRACES_SAMPLER=parentbased_traceidratio"
OTEL_VARIANTS = (
    "otel-off:APP_OTEL_ENABLED=false",
    f"otel-100:{OTEL_ON},OTEL_TRACES_SAMPLER_ARG=1.0",
    f"otel-10:{OTEL_ON},OTEL_TRACES_SAMPLER_ARG=0.1",
)
_VARIANT_KEYS = ("APP_", "OTEL_")


def parse_variant(spec: str, parser: argparse.ArgumentParser) -> tuple[str, dict[str, str]]:
    """`NAME:KEY=VALUE,KEY=VALUE` -> (NAME, {KEY: VALUE}); keys are APP_* or OTEL_* only."""
    name, colon, assignments = spec.partition(":")
    if not colon or not name or not name.replace("-", "").replace("_", "").isalnum():
        parser.error(f"--variant {spec!r}: expected NAME:KEY=VALUE,...")
    settings: dict[str, str] = {}
    for item in filter(None, (a.strip() for a in assignments.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.startswith(_VARIANT_KEYS):
            parser.error(f"--variant {spec!r}: {item!r} is not APP_*=VALUE or OTEL_*=VALUE")
        settings[key] = value
    return name, settings


def app_env(
    run: Run, database_url: str, redis_url: str, secret: str, smtp_port: int
) -> dict[str, str]:
    """The API server's environment: production settings, nothing inherited from APP_*."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("APP_", "PROMETHEUS_", "OTEL_"))
    }
    settings = {
        "APP_ENVIRONMENT": "production",
        "APP_DATABASE_URL": database_url,
        "APP_REDIS_URL": redis_url,
        "APP_JWT_SECRET": secret,
        "APP_LOG_LEVEL": "INFO",
        "APP_LOG_FORMAT": "json",
        "APP_RATE_LIMIT_ENABLED": "true",
        # Tokens are minted once per server start; a full run must not outlive them.
        "APP_ACCESS_TOKEN_TTL_SECONDS": "7200",
        "APP_GRACEFUL_SHUTDOWN_SECONDS": "5",
        # No worker runs during the bench: queued emails stay queued, nothing is sent anywhere.
        "APP_SMTP_HOST": "127.0.0.1",
        "APP_SMTP_PORT": str(smtp_port),
        # Required in production; no scenario touches an image, and the S3 client is made on
        # first use, so nothing listens there and nothing needs to.
        "APP_STORAGE_URL": f"s3://bench-media?endpoint=http://127.0.0.1:{smtp_port}",
        **appglue.rate_limit_env(),
    }
    for item in run.args.set:
        key, _, value = item.partition("=")
        if not key.startswith(_VARIANT_KEYS):
            raise SystemExit(f"error: --set {item!r}: expected APP_NAME=VALUE or OTEL_NAME=VALUE")
        settings[key] = value
    env.update(settings)
    return env


def settings_from_env(env: dict[str, str]) -> Any:
    from app.config import Settings, load_settings

    fields = set(Settings.model_fields)
    values = {
        k.removeprefix("APP_").lower(): v
        for k, v in env.items()
        if k.startswith("APP_") and k.removeprefix("APP_").lower() in fields
    }
    return load_settings(_env_file=None, **values)


@contextlib.contextmanager
def bench_database(server_url: str, keep: bool) -> Iterator[tuple[str, str]]:
    name = f"bench_{dt.datetime.now(dt.UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"
    url = asyncio.run(create_database(server_url, name))
    try:
        yield name, url
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            asyncio.run(drop_database(server_url, name))


async def _login_tokens(
    base_url: str, users: list[dict[str, Any]], password: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Access tokens obtained by logging in through the API (so their sessions exist)."""
    import httpx

    problems: list[str] = []
    limit = asyncio.Semaphore(4)

    async def one(client: httpx.AsyncClient, user: dict[str, Any]) -> dict[str, Any] | None:
        async with limit:
            answer = await client.post(
                "/api/v1/auth/login", json={"email": user["email"], "password": password}
            )
        if answer.status_code != 200:
            problems.append(f"login {user['email']}: {answer.status_code} {answer.text[:200]}")
            return None
        return {
            "token": answer.json()["access_token"],
            "user_id": user["id"],
            "orders": user["orders"],
            "org": user.get("org", ""),
            "key": user.get("key", ""),
        }

    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        results = await asyncio.gather(*(one(client, u) for u in users))
    return [r for r in results if r], problems


async def _product_etags(base_url: str, product_ids: list[str]) -> dict[str, str]:
    """Each product's current ETag, read anonymously through the API (which caches it)."""
    import httpx

    limit = asyncio.Semaphore(8)
    etags: dict[str, str] = {}

    async def one(client: httpx.AsyncClient, product_id: str) -> None:
        async with limit:
            answer = await client.get(f"/api/v1/products/{product_id}")
        if answer.status_code == 200 and answer.headers.get("etag"):
            etags[product_id] = answer.headers["etag"]

    headers = {"Accept-Encoding": "identity"}
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=headers) as client:
        await asyncio.gather(*(one(client, p) for p in product_ids))
    return etags


def _probe(base_url: str, scenario: Scenario, data: dict[str, Any]) -> str:
    """One request like the scenario's; '' when it succeeds, else what came back."""
    import httpx

    headers: dict[str, str] = {}
    body: Any = None
    path = scenario.path
    entry = (data.get("auth") or [{}])[0]
    if scenario.auth and entry:
        credential = entry["key"] if scenario.api_key else entry["token"]
        headers["Authorization"] = f"Bearer {credential}"
    path = path.replace("{org}", entry.get("org", ""))
    if "{order}" in path:
        path = path.replace("{order}", entry["orders"][0])
    path = path.replace("{user}", entry.get("user_id", ""))
    if "{product}" in path:
        path = path.replace("{product}", data["products"][0])
        if scenario.if_none_match:
            headers["If-None-Match"] = data["etags"].get(data["products"][0], "")
    if scenario.name == "order_create":
        path = "/api/v1/orders"
        body = {"items": [{"product_id": data["products"][0], "quantity": 1}]}
        headers["Idempotency-Key"] = "bench-probe-" + secrets.token_hex(8)
    if scenario.name == "login":
        path = "/api/v1/auth/login"
        body = data["logins"][0]
    try:
        answer = httpx.request(
            scenario.method if scenario.name != "health_under_login" else "GET",
            base_url + path,
            headers=headers,
            json=body,
            timeout=60,
        )
    except httpx.HTTPError as exc:
        return f"probe failed: {exc}"
    if 200 <= answer.status_code < 400:
        return ""
    return f"probe answered {answer.status_code}: {answer.text[:200]}"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk.ensure_wrk()
    started = dt.datetime.now(dt.UTC)
    raw_dir = RESULTS / "raw" / f"{started:%Y-%m-%dT%H%M%S}"
    run = Run(args=args, started=started, raw_dir=raw_dir)
    run.facts["wrk"] = wrk.wrk_version()
    print(f"bench: raw output under {raw_dir}", flush=True)

    from app.cli import run_migrations
    from app.dev import free_port

    failed = ""
    services = find_services(embedded=args.embedded)
    try:
        run.facts.update(asyncio.run(server_facts(services.database_url, services.redis_url)))
        run.facts["database_source"] = services.database_source
        run.facts["redis_source"] = services.redis_source
        with bench_database(services.database_url, args.keep_db) as (db_name, database_url):
            print(
                f"bench: database {db_name} ({services.database_source}), "
                f"Redis {services.redis_url} ({services.redis_source})",
                flush=True,
            )
            run_migrations(database_url)
            try:
                _execute(run, services.redis_url, database_url, free_port)
            except Exception as exc:
                # What was measured before the failure is still worth a results file.
                traceback.print_exc()
                failed = f"**the run stopped early**: {type(exc).__name__}: {exc}"
                run.notes.insert(0, failed.splitlines()[0])
    finally:
        services.stop()
    out = args.output or RESULTS / f"{started:%Y-%m-%d}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.render(run))
    print(f"bench: results written to {out}")
    return 1 if failed else 0


def _execute(run: Run, redis_url: str, database_url: str, free_port: Any) -> None:
    args = run.args
    secret = secrets.token_urlsafe(48)
    env = app_env(run, database_url, redis_url, secret, free_port())
    settings = settings_from_env(env)
    run.settings_lines = report.settings_lines(env, settings)

    hasher = appglue.resolve_hasher(settings)
    password_hash = hasher.hash(seed.PASSWORD)
    run.hasher = hasher.description
    run.argon2_params = appglue.argon2_parameters(password_hash)
    run.verify = appglue.time_verify(hasher, password_hash, seed.PASSWORD)

    print("bench: seeding ...", flush=True)
    seeded = asyncio.run(
        seed.seed(
            dsn(database_url),
            password_hash=password_hash,
            users=args.users,
            products=args.products,
            orders=args.orders,
            token_users=args.token_users,
            currency=settings.currency,
        )
    )
    run.seed = seeded
    run.notes.extend(seeded.notes)
    print(
        f"bench: seeded {seeded.users} users, {seeded.products} products, {seeded.orders} orders, "
        f"{seeded.lines} lines in {seeded.seconds:.1f}s",
        flush=True,
    )

    routes = appglue.route_table()
    floor_data = {
        "auth": [
            {"token": appglue.mint_access_token(settings, _uuid(i)), "user_id": i, "orders": []}
            for i in seeded.floor_ids
        ],
        "products": seeded.product_ids,
    }
    floor_file = write_lua_data(run.raw_dir / "floor-data.lua", floor_data)
    logins = [
        {"email": f"bench.user{i:05d}@example.com", "password": seed.PASSWORD}
        for i in range(min(seeded.users, 1000))
    ]

    from redis import Redis

    redis = Redis.from_url(redis_url)
    cwd = run.raw_dir / "cwd"  # no stray .env is read by the servers
    cwd.mkdir(parents=True, exist_ok=True)
    try:
        for workers in args.worker_counts:
            print(f"bench: {workers} worker(s)", flush=True)
            selected = _plan(run, workers, routes, seeded)
            # The floors of every selected scenario, even one skipped on this tree: they cost
            # little and show what the stack allows.
            floors_needed = {
                s.floor
                for s in args.selected
                if s.floor in FLOORS
                and ("products" not in FLOORS[s.floor].needs or seeded.product_ids)
            }
            redis.flushdb()
            if seeded.product_docs:
                redis.mset({FLOOR_PREFIX + k: v for k, v in seeded.product_docs.items()})
            floor = Server(
                f"floor ({workers}w)",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.floor:app",
                    "--app-dir",
                    str(ROOT),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(free_port()),
                    "--workers",
                    str(workers),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                {**env, **_floor_env(database_url, redis_url, settings, seeded)},
                cwd,
                0,
                run.raw_dir / f"{workers}w-floor.log",
            )
            floor.port = int(floor.cmd[floor.cmd.index("--port") + 1])
            floor.start()
            try:
                for name in ("floor_health", "floor_jwt_pg", "floor_redis"):
                    if name in floors_needed:
                        run.floors.append(measure(run, floor, FLOORS[name], floor_file, workers))
            finally:
                floor.stop()

            if not selected:
                continue
            redis.flushdb()  # no cache or rate-limit counters from earlier runs
            for variant, extra in run.args.variants:
                run.variant = variant
                if variant:
                    print(f"bench: variant {variant} ({workers}w)", flush=True)
                _run_api(run, env, extra, workers, selected, seeded, settings, logins, routes)
                redis.flushdb()  # nothing of one variant's run carries into the next
            run.variant = ""
    finally:
        redis.close()


_ADMIN_ENTRIES: dict[Path, dict[str, Any]] = {}


def _admin_entry(path: Path) -> dict[str, Any]:
    return _ADMIN_ENTRIES[path]


def _deep_page_setup(
    run: Run,
    api: Server,
    workers: int,
    seeded: seed.SeedResult,
    settings: Any,
    data: dict[str, Any],
) -> tuple[Path | None, dict[str, str], str]:
    """An admin's token (the first token user, promoted) and the deep page's placeholders:
    `{cursor}`, the cursor after row `--cursor-depth` of the admin's list of every order, and
    `{deep_page}`, the page of 20 that starts there."""
    import asyncpg

    depth = max(1, run.args.cursor_depth)
    depth = min(depth, max(1, seeded.orders - 20))
    admin = seeded.token_users[0]

    async def prepare() -> tuple[str, Any, Any]:
        conn = await asyncpg.connect(dsn(settings.database_url))
        try:
            await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", _uuid(admin["id"]))
            row = await conn.fetchrow(
                "SELECT created_at, id FROM orders ORDER BY created_at DESC, id DESC "
                "OFFSET $1 LIMIT 1",
                depth - 1,
            )
        finally:
            await conn.close()
        tokens, problems = await _login_tokens(api.base_url, [admin], seed.PASSWORD)
        if not tokens:
            return "", None, problems
        return tokens[0]["token"], row, problems

    token, row, problems = asyncio.run(prepare())
    if not token or row is None:
        return None, {}, f"no admin token or no row at depth {depth}: {problems}"
    placeholders = {"deep_page": str(depth // 20 + 1)}
    cursor = appglue.order_cursor(settings, admin["id"], row["created_at"], row["id"])
    if cursor:
        placeholders["cursor"] = cursor
    entry = {"token": token, "user_id": admin["id"], "orders": []}
    path = write_lua_data(
        run.raw_dir / f"{workers}w-admin-data.lua",
        {"auth": [entry], "products": data["products"], "logins": []},
    )
    _ADMIN_ENTRIES[path] = entry
    run.notes.append(
        f"{workers}w: deep order pages at depth {depth} of {seeded.orders} orders, as an admin"
    )
    return path, placeholders, ""


def _run_api(
    run: Run,
    env: dict[str, str],
    extra: dict[str, str],
    workers: int,
    selected: list[Scenario],
    seeded: seed.SeedResult,
    settings: Any,
    logins: list[dict[str, str]],
    routes: set[tuple[str, str]],
) -> None:
    """Start `saas serve` with the run's settings and the variant's, measure, stop it."""
    from app.dev import free_port

    cwd = run.raw_dir / "cwd"
    port = free_port()
    api_env = {**env, **extra}
    sink = _start_otlp_sink(run, api_env, workers, cwd)
    if workers > 1:
        # What `saas serve` would create itself, but inside the run's directory so
        # that the per-process metric files are not left behind in /tmp.
        metrics_dir = run.raw_dir / run.label(workers, "metrics")
        metrics_dir.mkdir(parents=True, exist_ok=True)
        api_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    api = Server(
        f"saas serve ({workers}w)",
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        api_env,
        cwd,
        port,
        run.raw_dir / (run.label(workers, "api") + ".log"),
    )
    api.start()
    try:
        _measure_api(run, api, workers, selected, seeded, settings, logins, routes)
        _note_rss_after(run, api, workers)
    finally:
        api.stop()
        if sink is not None:
            sink.stop()


# Longer than the app's idle trim of argon2's memory (app.core.memory.IdleTrim, 5 s).
_SETTLE_SECONDS = 7.0


def _note_rss_after(run: Run, api: Server, workers: int) -> None:
    """Each worker's RSS once the scenarios are over and the server has been idle a moment:
    what a worker keeps (issue 19's target is on this), not its peak under load."""
    time.sleep(_SETTLE_SECONDS)
    values = [_rss_kb(pid) / 1024 for pid in api.worker_pids()]
    if values:
        listed = ", ".join(f"{value:.0f}" for value in values)
        variant = f" ({run.variant})" if run.variant else ""
        run.notes.append(
            f"RSS of each worker after the run{variant}, {workers} worker(s), idle "
            f"{_SETTLE_SECONDS:.0f} s: {listed} MB"
        )


def _start_otlp_sink(run: Run, api_env: dict[str, str], workers: int, cwd: Path) -> Any:
    """With tracing on and no endpoint given: a local OTLP/HTTP sink to export to."""
    from app.dev import free_port

    if api_env.get("APP_OTEL_ENABLED", "").lower() not in {"1", "true", "yes", "on"}:
        return None
    if "OTEL_EXPORTER_OTLP_ENDPOINT" in api_env:
        return None
    port = free_port()
    api_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    api_env.setdefault("OTEL_SERVICE_NAME", "saas-api-bench")
    sink = Server(
        "otlp sink",
        [sys.executable, str(ROOT / "bench" / "otlp_sink.py"), str(port)],
        {k: v for k, v in os.environ.items() if not k.startswith("APP_")},
        cwd,
        port,
        run.raw_dir / (run.label(workers, "otlp-sink") + ".log"),
    )
    sink.start()
    run.notes.append(
        "variants with tracing on export every sampled span over OTLP/HTTP to bench/otlp_sink.py "
        "on this machine (it answers like a collector and drops the spans)"
    )
    return sink


def _uuid(text: str) -> Any:
    import uuid

    return uuid.UUID(text)


def _floor_env(
    database_url: str, redis_url: str, settings: Any, seeded: seed.SeedResult
) -> dict[str, str]:
    return {
        "BENCH_FLOOR_DSN": dsn(database_url),
        "BENCH_FLOOR_REDIS_URL": redis_url,
        "BENCH_FLOOR_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "BENCH_FLOOR_JWT_ALGORITHM": settings.jwt_algorithm,
        "BENCH_FLOOR_JWT_AUDIENCE": settings.jwt_audience,
        "BENCH_FLOOR_JWT_ISSUER": settings.jwt_issuer,
        "BENCH_FLOOR_SQL": seeded.floor_sql,
        # The same connection budget per process as the API's pool.
        "BENCH_FLOOR_POOL_SIZE": str(settings.db_pool_size + settings.db_max_overflow),
        "BENCH_FLOOR_REDIS_PREFIX": FLOOR_PREFIX,
    }


def _plan(
    run: Run, workers: int, routes: set[tuple[str, str]], seeded: seed.SeedResult
) -> list[Scenario]:
    """The selected scenarios that can run; the others are recorded as skipped, with why."""
    runnable = []
    for scenario in run.args.selected:
        missing = [
            f"{m} {p}"
            for m, p in ((scenario.method, scenario.route), *scenario.extra_routes)
            if not appglue.has_route(routes, m, p)
        ]
        reason = ""
        if missing:
            reason = "route missing: " + ", ".join(missing)
        elif "products" in scenario.needs and not seeded.product_ids:
            reason = "no products table to seed"
        elif "orders" in scenario.needs and not seeded.orders:
            reason = "no orders seeded (orders table missing)"
        elif ({"tokens", "logins"} & set(scenario.needs)) and not seeded.users:
            reason = "no users table to seed"
        if reason:
            run.outcomes.append(Outcome(scenario, workers, skipped=reason, variant=run.variant))
        else:
            runnable.append(scenario)
    return runnable


def _measure_api(
    run: Run,
    api: Server,
    workers: int,
    selected: list[Scenario],
    seeded: seed.SeedResult,
    settings: Any,
    logins: list[dict[str, str]],
    routes: set[tuple[str, str]],
) -> None:
    data: dict[str, Any] = {"auth": [], "products": seeded.product_ids, "logins": logins}
    if any("tokens" in s.needs for s in selected):
        if appglue.has_route(routes, "POST", "/api/v1/auth/login"):
            print(f"  logging in {len(seeded.token_users)} users for tokens ...", flush=True)
            tokens, problems = asyncio.run(
                _login_tokens(api.base_url, seeded.token_users, seed.PASSWORD)
            )
            if problems:
                run.notes.append(
                    f"{workers}w: {len(problems)} token logins failed, e.g. {problems[0]}"
                )
            api.take_errors(run.raw_dir / f"{workers}w-login-for-tokens-server-errors.log")
        else:
            # No login route on this tree: tokens signed by the app's own Tokens with the run's
            # secret (the API checks signature, claims, the session denylist and the user row).
            tokens = [
                {
                    "token": appglue.mint_access_token(settings, _uuid(u["id"])),
                    "user_id": u["id"],
                    "orders": u["orders"],
                    "org": u.get("org", ""),
                    "key": u.get("key", ""),
                }
                for u in seeded.token_users
            ]
            run.notes.append(
                "no login route on this tree: the API's tokens were minted with "
                "`app.core.security.Tokens` and the run's secret"
            )
        data["auth"] = tokens
    if any("etags" in s.needs for s in selected):
        data["etags"] = asyncio.run(_product_etags(api.base_url, seeded.product_ids))
        if len(data["etags"]) < len(seeded.product_ids):
            run.notes.append(
                f"{workers}w: {len(seeded.product_ids) - len(data['etags'])} products "
                "answered without an ETag"
            )
    data_file = write_lua_data(run.raw_dir / f"{workers}w-api-data.lua", data)
    admin_file: Path | None = None
    deep: dict[str, str] = {}
    if any("admin" in s.needs for s in selected) and data["auth"]:
        admin_file, deep, problem = _deep_page_setup(run, api, workers, seeded, settings, data)
        if problem:
            run.notes.append(f"{workers}w: deep order pages: {problem}")
    by_name = {s.name: s for s in SCENARIOS}
    for scenario in selected:
        if "admin" in scenario.needs:
            if admin_file is None:
                run.outcomes.append(Outcome(scenario, workers, skipped="no admin token"))
                continue
            path = scenario.path
            for name, value in deep.items():
                path = path.replace("{" + name + "}", value)
            if "{" in path:
                run.outcomes.append(
                    Outcome(scenario, workers, skipped="no cursor pages on this tree")
                )
                continue
            scenario = dataclasses.replace(scenario, path=path)
            problem = _probe(api.base_url, scenario, {"auth": [_admin_entry(admin_file)]})
            api.take_errors(None)
            outcome = measure(run, api, scenario, admin_file, workers)
            if problem:
                outcome.notes.insert(0, problem)
            run.outcomes.append(outcome)
            continue
        if "tokens" in scenario.needs and not data["auth"]:
            run.outcomes.append(
                Outcome(
                    scenario,
                    workers,
                    skipped="no tokens (every login failed)",
                    variant=run.variant,
                )
            )
            continue
        problem = _probe(api.base_url, scenario, data)
        api.take_errors(None)
        if scenario.name == "health_under_login":
            outcome = measure_health_under_login(
                run, api, scenario, by_name["login"], data_file, workers
            )
        else:
            outcome = measure(run, api, scenario, data_file, workers)
        if problem:
            outcome.notes.insert(0, problem)
        run.outcomes.append(outcome)


if __name__ == "__main__":
    raise SystemExit(main())
