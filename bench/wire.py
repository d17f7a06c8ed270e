"""Round trips to PostgreSQL and Redis, counted on the wire.

A `CountingProxy` sits between the app and one server on a loopback port and forwards bytes both
ways. A round trip is a client turn: bytes the client sends after the server last spoke (or
first on a connection). Pipelined commands and asyncpg's Parse/Bind/Execute/Sync batches are
one turn, as they cost one wait for the network. Each turn is labelled with what it asked:
the SQL of a PostgreSQL query (by its prepared statement for a Bind) or a Redis command's name
and first argument.

Used by `python -m bench.inproc --round-trips SCENARIO` to say what a request waits for.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

_SPACES = re.compile(r"\s+")


@dataclass
class Turn:
    server: str
    label: str
    connection: int
    after_response: bool = False


@dataclass
class WireLog:
    turns: list[Turn] = field(default_factory=list)
    # Set by the caller once the response has started: later turns are after the response.
    responded: bool = False

    def take(self) -> list[Turn]:
        taken, self.turns = self.turns, []
        return taken


def _cstring(data: bytes, start: int) -> tuple[str, int]:
    end = data.index(b"\0", start)
    return data[start:end].decode(errors="replace"), end + 1


def _short(sql: str, width: int = 110) -> str:
    sql = _SPACES.sub(" ", sql).strip()
    return sql if len(sql) <= width else sql[: width - 3] + "..."


class PostgresLabeller:
    """Names a client turn of the PostgreSQL protocol (after the startup packet)."""

    def __init__(self) -> None:
        self.statements: dict[str, str] = {}
        self.started = False

    def __call__(self, data: bytes) -> str:
        if not self.started:
            self.started = True
            return "startup"
        labels: list[str] = []
        offset = 0
        while offset + 5 <= len(data):
            kind = chr(data[offset])
            (length,) = struct.unpack("!i", data[offset + 1 : offset + 5])
            body = data[offset + 5 : offset + 1 + length]
            offset += 1 + length
            try:
                if kind == "Q":
                    labels.append(_short(_cstring(body, 0)[0]))
                elif kind == "P":
                    name, at = _cstring(body, 0)
                    sql = _cstring(body, at)[0]
                    self.statements[name] = sql
                    labels.append("prepare " + _short(sql))
                elif kind == "B":
                    _, at = _cstring(body, 0)
                    name = _cstring(body, at)[0]
                    labels.append(_short(self.statements.get(name, f"<statement {name}>")))
                elif kind == "X":
                    labels.append("terminate")
            except ValueError:
                break
        return " | ".join(labels) or "<continuation>"


def redis_labeller(scripts: dict[str, str]) -> Callable[[bytes], str]:
    """`redis_label`, with the SHA of a known Lua script (`EVALSHA`) replaced by its name."""

    def label(data: bytes) -> str:
        text = redis_label(data)
        for sha, name in scripts.items():
            text = text.replace(sha, f"<{name}>")
        return text

    return label


def redis_label(data: bytes) -> str:
    """The command names (and first arguments) of a RESP turn, pipelines included."""
    parts = data.split(b"\r\n")
    labels: list[str] = []
    index = 0
    while index < len(parts):
        part = parts[index]
        if part.startswith(b"*") and part[1:].isdigit():
            count = int(part[1:])
            words = [
                parts[index + 2 + 2 * n]
                for n in range(min(count, 2))
                if index + 2 + 2 * n < len(parts)
            ]
            labels.append(" ".join(w.decode(errors="replace")[:40] for w in words))
            index += 1 + 2 * count
        else:
            index += 1
    return " | ".join(labels) or "<continuation>"


class CountingProxy:
    """A loopback TCP proxy to `host:port` that logs each client turn in `log`."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        log: WireLog,
        labeller: Callable[[], Callable[[bytes], str]],
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.log = log
        self.labeller = labeller
        self.server: asyncio.Server | None = None
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with suppress(Exception):
                await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        label = self.labeller()
        server_spoke = True  # the client's first bytes are a turn

        async def client_to_server() -> None:
            nonlocal server_spoke
            while data := await reader.read(65536):
                if server_spoke:
                    server_spoke = False
                    self.log.turns.append(
                        Turn(self.name, label(data), number, after_response=self.log.responded)
                    )
                upstream_writer.write(data)
                await upstream_writer.drain()
            upstream_writer.close()

        async def server_to_client() -> None:
            nonlocal server_spoke
            while data := await upstream_reader.read(65536):
                server_spoke = True
                writer.write(data)
                await writer.drain()
            writer.close()

        with suppress(Exception):
            await asyncio.gather(client_to_server(), server_to_client())
