"""An app served by uvicorn inside the test's own event loop, on a free loopback port.

For the tests that need a real server and real sockets but also want to look at the server's
side (its tasks, its timers, the app's state) or to share its database fixtures; `saas serve`
in a child process is `tests/integration/events/conftest.py`'s `live_server`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


@asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[int]:
    """Serve `app` (uvicorn `Config` options in `config`) until the block ends; yields the port."""
    options: dict[str, Any] = {"log_config": None, "access_log": False, **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **options))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # it failed to start: say why
                await asyncio.sleep(0.01)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task
