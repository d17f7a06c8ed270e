"""The `saas` command: run, migrate and inspect the service."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from dotenv import dotenv_values

from app.config import (
    DEV_ENV_FILE,
    Settings,
    SettingsError,
    dev_env_file,
    get_settings,
    load_settings,
)

cli = typer.Typer(
    help="saas-backend: the API server, the worker and their tools.",
    no_args_is_help=True,
    add_completion=False,
)

ROOT = Path(__file__).resolve().parents[2]


def _settings() -> Settings:
    try:
        settings = get_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    dev_env = dev_env_file()
    if dev_env is not None and "APP_DATABASE_URL" not in os.environ:
        typer.echo(f"using the settings of the running `saas dev` ({dev_env})", err=True)
    return settings


def _alembic_config(database_url: str | None = None) -> object:
    from alembic.config import Config

    ini = ROOT / "alembic.ini"
    config = Config(str(ini if ini.exists() else Path.cwd() / "alembic.ini"))
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def run_migrations(database_url: str, revision: str = "head") -> None:
    """`alembic upgrade <revision>` against `database_url`."""
    from alembic import command
    from alembic.config import Config

    config = _alembic_config(database_url)
    assert isinstance(config, Config)
    command.upgrade(config, revision)


def pending_migrations(database_url: str) -> tuple[set[str], set[str]]:
    """The revisions the database is at and the heads of this code's migrations."""
    import asyncio

    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import pool
    from sqlalchemy.ext.asyncio import create_async_engine

    config = _alembic_config(database_url)
    assert isinstance(config, Config)
    heads = set(ScriptDirectory.from_config(config).get_heads())

    async def current() -> set[str]:
        engine = create_async_engine(database_url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: set(MigrationContext.configure(sync).get_current_heads())
                )
        finally:
            await engine.dispose()

    return asyncio.run(current()), heads


@cli.command()
def migrate(
    check: Annotated[
        bool,
        typer.Option(help="Apply nothing: exit 0 if the database is at head, else 1"),
    ] = False,
    wait: Annotated[
        float,
        typer.Option(help="With --check: keep checking this many seconds before failing"),
    ] = 0.0,
) -> None:
    """Apply every pending migration (alembic upgrade head) to APP_DATABASE_URL.

    `--check --wait N` is what a new pod runs before it starts (Kubernetes init containers):
    it waits for the migrations Job to bring the schema to this code's head.
    """
    settings = _settings()
    if not check:
        run_migrations(settings.database_url)
        typer.echo("migrations applied")
        return
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            current, heads = pending_migrations(settings.database_url)
        except Exception as exc:  # the database may not answer yet
            current, heads, problem = set(), set(), type(exc).__name__
        else:
            problem = ""
            if current == heads:
                typer.echo(f"database at head ({', '.join(sorted(heads))})")
                return
        if time.monotonic() >= deadline:
            detail = problem or f"at {sorted(current) or 'no revision'}, code at {sorted(heads)}"
            typer.echo(f"error: database is not at head: {detail}", err=True)
            raise typer.Exit(1)
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [APP_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [APP_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [APP_WORKERS]")] = None,
) -> None:
    """Run the production server (uvicorn)."""
    settings = _settings()
    worker_count = workers or settings.workers
    if worker_count > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker process writes its samples here; /metrics adds them up.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="saas-metrics-")
    import uvicorn

    from app.core.logging import configure_logging

    configure_logging(settings.log_level, json=settings.json_logs)
    uvicorn.run(
        "app.main:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=worker_count,
        **proxy_options(settings),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        # A worker still importing the app on a busy host misses uvicorn's 5 s health check
        # and is killed and restarted forever; a hung worker is still replaced, later.
        timeout_worker_healthcheck=30,
        **websocket_options(settings),
    )


def websocket_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's WebSocket settings, the same for `saas serve` and `saas dev`.

    Event streams: ping frames as the heartbeat (API.md: at least every 25 s), sent by the
    process's one `Heartbeat`, which fails a connection whose ping is still unanswered at its
    next turn (so the pong timeout is the interval), small client messages only (the auth
    message), no per-message compression (it costs each idle connection hundreds of KB of zlib
    state), and uvicorn's protocol with less kept per connection (`app.core.websocket_protocol`).
    """
    from app.core.websocket_protocol import WEBSOCKET_PROTOCOL

    return {
        "ws_ping_interval": settings.events_heartbeat_seconds,
        "ws_ping_timeout": settings.events_heartbeat_seconds,
        "ws_max_size": 64 * 1024,
        "ws_per_message_deflate": False,
        "ws": WEBSOCKET_PROTOCOL,
    }


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's view of `X-Forwarded-For`, the same for `saas serve` and `saas dev`.

    Only the peers in `APP_TRUSTED_PROXIES` are believed. uvicorn's own default believes
    127.0.0.1 (and `FORWARDED_ALLOW_IPS`), which would let anything on the host choose the
    address that rate limits count; with no trusted proxy the headers are not read at all.
    """
    trusted = ",".join(settings.trusted_proxies)
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


@cli.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Stop when the queue is empty")] = False,
    check: Annotated[
        bool, typer.Option(help="Exit 0 if a worker reported in the last 31 s, else 1")
    ] = False,
) -> None:
    """Run the background worker (ARQ), or check that one is alive."""
    from app import worker as worker_module

    settings = _settings()
    if check:
        import asyncio

        report = asyncio.run(worker_module.health(settings))
        if report is None:
            typer.echo("error: no worker is alive (no health report in Redis)", err=True)
            raise typer.Exit(1)
        typer.echo(f"worker alive: {report}")
        return
    worker_module.run(settings, burst=burst)


@cli.command()
def openapi() -> None:
    """Print the OpenAPI document (needs no database or Redis)."""
    from app.main import create_app

    placeholder = load_settings(
        environment="development",
        database_url="postgresql+asyncpg://localhost/openapi",
        redis_url="redis://localhost:6379/0",
        jwt_secret="openapi-generation-only-" + "x" * 16,
        docs_enabled=True,
        log_level="WARNING",
    )
    typer.echo(json.dumps(create_app(placeholder).openapi(), indent=2))


@cli.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's email (created, or promoted)")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    full_name: Annotated[str, typer.Option(help="Name of a new account")] = "Administrator",
) -> None:
    """Create an admin, or promote the account of EMAIL; the password policy applies.

    The password is asked for (twice, hidden), or read from stdin with --password-stdin (one
    trailing newline stripped). It becomes the account's password in both cases, and every
    earlier token of a promoted account stops working.
    """
    import asyncio

    from pydantic import TypeAdapter, ValidationError
    from pydantic.networks import EmailStr

    from app.features.auth.password_policy import policy_problem

    settings = _settings()
    try:
        address = TypeAdapter(EmailStr).validate_python(email.strip()).lower()
    except ValidationError:
        typer.echo(f"error: {email!r} is not a valid email address", err=True)
        raise typer.Exit(2) from None
    if password_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    problem = policy_problem(password)
    if problem is not None:
        typer.echo(f"error: the password {problem}", err=True)
        raise typer.Exit(2)
    created = asyncio.run(_make_admin(settings, address, password, full_name.strip()))
    typer.echo(f"admin {'created' if created else 'promoted'}: {address}")


async def _make_admin(settings: Settings, email: str, password: str, full_name: str) -> bool:
    from app.core.database import create_engine, create_session_factory, session_scope
    from app.core.security import Passwords
    from app.features.auth.service import LoginSessions
    from app.features.users.service import UserService

    engine = create_engine(settings)
    try:
        async with session_scope(create_session_factory(engine)) as session:
            users = UserService(session)
            existed = await users.get_by_email(email) is not None
            password_hash = await Passwords(settings).hash(password)
            await users.make_admin(
                email=email,
                password_hash=password_hash,
                full_name=full_name,
                logins=LoginSessions(session),
            )
    finally:
        await engine.dispose()
    return not existed


@cli.command()
def dev(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Where the embedded services keep data")] = Path(
        ".data"
    ),
    reload: Annotated[bool, typer.Option(help="Restart the API when the code changes")] = True,
) -> None:
    """The whole system on this machine: embedded PostgreSQL, Redis, SMTP sink, S3-compatible
    object store (in memory), API and worker.

    Nothing needs to be installed or configured first. An APP_* variable you set still wins.
    """
    from app.dev import (
        EmbeddedPostgres,
        EmbeddedRedis,
        EmbeddedS3,
        EmbeddedUnavailableError,
        SmtpSink,
    )

    data_dir = _private_dir(data_dir.resolve())
    started: list[EmbeddedPostgres | EmbeddedRedis | SmtpSink | EmbeddedS3] = []
    env = os.environ
    # A value in .env counts as set too: it is the user's choice, not ours to override.
    configured = set(env) | {key for key, value in dotenv_values(".env").items() if value}
    env.setdefault("APP_ENVIRONMENT", "development")
    # Every APP_* setting chosen here, for the commands run beside it (see _write_dev_env).
    dev_env = data_dir / "dev.env"
    if "APP_JWT_SECRET" not in configured:
        env["APP_JWT_SECRET"] = _dev_secret(data_dir / "jwt_secret")
    try:
        if "APP_DATABASE_URL" not in configured:
            postgres = EmbeddedPostgres(data_dir / "postgres")
            env["APP_DATABASE_URL"] = postgres.start()
            started.append(postgres)
        if "APP_REDIS_URL" not in configured:
            redis = EmbeddedRedis(data_dir / "redis")
            env["APP_REDIS_URL"] = redis.start()
            started.append(redis)
        if not {"APP_SMTP_HOST", "APP_SMTP_PORT"} & configured:
            # aiosmtpd logs every SMTP command at INFO; the sink prints each message itself.
            logging.getLogger("mail.log").setLevel(logging.WARNING)
            sink = SmtpSink(mail_dir=data_dir / "mail", echo=True).start()
            env["APP_SMTP_HOST"], env["APP_SMTP_PORT"] = sink.host, str(sink.port)
            started.append(sink)
        if "APP_STORAGE_URL" not in configured:
            store = EmbeddedS3().start()
            env["APP_STORAGE_URL"] = store.url
            env["APP_STORAGE_ACCESS_KEY"] = store.access_key
            env["APP_STORAGE_SECRET_KEY"] = store.secret_key
            started.append(store)
        # pgserver, run as root, opens the data directory to others (g+rx,o+rx) so that its own
        # system user can reach the database files: close it again, leaving root's case
        # traversable only (0711: no listing; the secrets in it are 0600 anyway).
        data_dir.chmod(0o711 if _is_root() else 0o700)
        get_settings.cache_clear()
        settings = _settings()
        chosen = {key: env[key] for key in sorted(env) if key.startswith("APP_")}
        _write_dev_env(dev_env, {k: v for k, v in chosen.items() if k not in configured})
        run_migrations(settings.database_url)
        admin = _dev_admin(settings, data_dir / "admin.json")
        _print_banner(host, port, data_dir, admin, settings, dev_env)
        worker_process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"])
        try:
            import uvicorn

            uvicorn.run(
                "app.main:app",
                host=host,
                port=port,
                reload=reload,
                reload_dirs=[str(Path(__file__).parent)] if reload else None,
                **proxy_options(settings),
                log_config=None,
                access_log=False,
                **websocket_options(settings),
            )
        finally:
            worker_process.terminate()
            try:
                worker_process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker_process.kill()
    except EmbeddedUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        dev_env.unlink(missing_ok=True)
        for service in reversed(started):
            service.stop()


def _refuse_if_shared(path: Path) -> None:
    """Stop (exit 2) if another user could change `path`: it holds or guards secrets."""
    info = path.stat()
    problem = None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = "is writable by its group or by others"
    elif hasattr(os, "getuid") and info.st_uid != os.getuid():
        problem = "belongs to another user"
    if problem is not None:
        kind = "directory" if path.is_dir() else "file"
        typer.echo(
            f"error: the data {kind} {path} {problem}; it holds secrets (the JWT secret, the "
            f"admin's password, the databases). Fix it (chmod go-w {path}) or use another "
            "--data-dir.",
            err=True,
        )
        raise typer.Exit(2)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _private_dir(path: Path) -> Path:
    """The data directory, created 0700; an existing one is checked, then made 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _refuse_if_shared(path)
    path.chmod(0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from the start (no moment with the umask's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _read_private(path: Path) -> str:
    _refuse_if_shared(path)
    return path.read_text()


def _write_dev_env(path: Path, values: dict[str, str]) -> None:
    """The settings `saas dev` chose, for the commands run beside it (`app.config.dev_env_file`):
    owner-only (it holds the JWT secret), replaced atomically."""
    lines = ["# Written by `saas dev` while it runs (removed when it stops). Do not edit."]
    for key, value in values.items():
        quoted = f"'{value}'" if "'" not in value else json.dumps(value)
        lines.append(f"{key}={quoted}")
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    partial.chmod(0o600)
    partial.replace(path)


def _dev_secret(path: Path) -> str:
    """A development JWT secret, generated once and kept under the data directory."""
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(48))
    return _read_private(path).strip()


DEV_ADMIN_EMAIL = "admin@example.com"


def _dev_admin(settings: Settings, path: Path) -> tuple[str, str]:
    """The development admin: created on the first `saas dev`, its credentials kept in `path`.

    Later runs reuse the file and create the account again only if the database lost it, so a
    restart never invalidates the tokens a developer holds.
    """
    import asyncio

    if path.exists():
        saved = json.loads(_read_private(path))
        email, password = str(saved["email"]), str(saved["password"])
    else:
        email, password = DEV_ADMIN_EMAIL, secrets.token_urlsafe(12)
    if asyncio.run(_admin_missing(settings, email)):
        asyncio.run(_make_admin(settings, email, password, "Development Admin"))
    if not path.exists():
        _write_private(path, json.dumps({"email": email, "password": password}))
    return email, password


async def _admin_missing(settings: Settings, email: str) -> bool:
    from app.core.database import create_engine, create_session_factory, session_scope
    from app.features.users.service import UserService

    engine = create_engine(settings)
    try:
        async with session_scope(create_session_factory(engine)) as session:
            return await UserService(session).get_by_email(email) is None
    finally:
        await engine.dispose()


def _print_banner(
    host: str,
    port: int,
    data_dir: Path,
    admin: tuple[str, str],
    settings: Settings,
    dev_env: Path,
) -> None:
    base = f"http://{host}:{port}"
    if dev_env.resolve() == DEV_ENV_FILE.resolve():
        beside = f"  Settings  {DEV_ENV_FILE} (saas and alembic in another terminal here read it)"
    else:
        beside = f"  Settings  {dev_env} (in another terminal: set -a; . {dev_env}; set +a)"
    typer.echo(
        "\n".join(
            [
                "",
                "saas-backend is starting (development)",
                f"  API       {base}/api/v1",
                f"  Docs      {base}/docs",
                f"  Ready     {base}/ready",
                f"  Admin     {admin[0]} / {admin[1]}  (kept in {data_dir / 'admin.json'})",
                f"  Data      {data_dir} (mail saved under {data_dir / 'mail'})",
                f"  Postgres  {_without_password(settings.database_url)}",
                f"  Redis     {_without_password(settings.redis_url)}",
                f"  SMTP      {settings.smtp_host}:{settings.smtp_port}",
                beside,
                "  Ctrl-C stops everything.",
                "",
            ]
        )
    )


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for display: any URL the parser refuses is shown by its host
        return url.split("@")[-1]


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
