"""A client process holding idle, authenticated WebSockets, for `bench.realtime` and
`bench.ws_memory`.

    python -m bench.ws_clients ws://127.0.0.1:8000/api/v1/events/ws [--nice 19]

It reads a JSON list of access tokens from its first line of input, opens one WebSocket per
token (100 handshakes at a time), sends each its auth message and waits for `ready`, then
prints `open <count>`. On the next line of input (or its end) it closes them all, prints
`closed` and exits.

Its clients send no ping frames, like browsers (their WebSocket API never sends one): the
server's heartbeat is what keeps a stream alive, and its clients only answer it.

The sockets live in their own process so that the process measuring the server is not the one
they wake: with `--nice 19` the kernel also schedules them after the server and `wrk` on a
small machine, where in production the clients would be on other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class HeldSockets:
    """The client process, seen from the bench: `await HeldSockets.open(...)` returns once every
    socket is open and authenticated; `await held.close()` closes them and waits for the
    process to end."""

    def __init__(self, process: asyncio.subprocess.Process, count: int) -> None:
        self.process = process
        self.count = count

    @classmethod
    async def open(cls, url: str, tokens: list[str], *, nice: int = 0) -> HeldSockets:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ws_clients",
            url,
            "--nice",
            str(nice),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps(tokens).encode() + b"\n")
        await process.stdin.drain()
        line = (await process.stdout.readline()).decode()
        if not line.startswith("open "):
            process.kill()
            await process.wait()
            raise RuntimeError(f"bench.ws_clients could not open its sockets (exit {line!r})")
        return cls(process, int(line.split()[1]))

    async def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(b"\n")
        await self.process.stdin.drain()
        await self.process.stdout.readline()
        await asyncio.wait_for(self.process.wait(), timeout=60)


async def open_sockets(url: str, tokens: list[str]) -> list[Any]:
    """One authenticated WebSocket per token, in the tokens' order (100 handshakes at a time).

    No ping frames from the client, as from a browser (its WebSocket API never sends one): the
    server's heartbeat is what keeps a stream alive. The websockets library's default (one every
    20 s) doubled the frames each idle stream costs."""
    from websockets.asyncio.client import connect

    limit = asyncio.Semaphore(100)

    async def one(token: str) -> Any:
        async with limit:
            ws = await connect(url, open_timeout=60, max_queue=None, ping_interval=None)
            await ws.send(json.dumps({"type": "auth", "access_token": token}))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                raise RuntimeError(f"no ready message: {ready}")
            return ws

    return list(await asyncio.gather(*(one(token) for token in tokens)))


async def hold(url: str, tokens: list[str]) -> None:
    sockets = await open_sockets(url, tokens)
    print(f"open {len(sockets)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    print("closed", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_clients", description=__doc__)
    parser.add_argument("url", help="the event stream's WebSocket URL")
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority by")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    tokens = json.loads(sys.stdin.readline())
    asyncio.run(hold(args.url, tokens))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
