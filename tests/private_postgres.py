"""A private PostgreSQL server on a loopback port that a test may stop and start again.

Built from the `pgserver` wheel's binaries (initdb, pg_ctl): never the shared server the other
tests use. Outage tests stop this one under the app and start it again on the same port.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.dev import free_port


class PrivatePostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="saas-outage-"))
        self.pgdata = self.root / "pg"
        self.port = free_port()
        self._user: str | None = None

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[import-untyped]

        kwargs: dict[str, Any] = {"pgdata": self.pgdata, "timeout": 60}
        if self._user is not None:
            kwargs["user"] = self._user
        pg_ctl(list(args), **kwargs)

    def create(self) -> PrivatePostgres:
        """initdb (pgserver handles running as root: a system user of its own) and start."""
        from pgserver import get_server  # type: ignore[attr-defined]

        server = get_server(str(self.pgdata), cleanup_mode=None)
        self._user = server.system_user
        self._pg_ctl("-w", "-m", "fast", "stop")  # it listens on a socket only; restart on TCP
        self.start()
        return self

    def start(self) -> None:
        self._pg_ctl(
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session at once (in-flight queries fail), like a restart."""
        self._pg_ctl("-w", "-m", mode, "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        with contextlib.suppress(Exception):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
