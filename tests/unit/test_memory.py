"""argon2's memory goes back to the system once hashing is idle (app.core.memory)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from app.core import memory
from app.core.memory import IdleTrim

glibc = pytest.mark.skipif(memory._glibc() is None, reason="malloc_trim is glibc's")


class Runs:
    def __init__(self) -> None:
        self.calls: list[Callable[[], bool]] = []

    def __call__(self, function: Callable[[], bool]) -> None:
        self.calls.append(function)


@glibc
async def test_trim_runs_once_after_the_last_hash_has_been_idle_for_the_delay() -> None:
    runs = Runs()
    idle = IdleTrim(runs, delay=0.05)
    idle.busy()
    idle.busy()
    idle.done()
    await asyncio.sleep(0.1)
    assert runs.calls == []  # one still busy
    idle.done()
    await asyncio.sleep(0.02)
    assert runs.calls == []  # not idle for long enough yet
    await asyncio.sleep(0.08)
    assert runs.calls == [memory.trim]


@glibc
async def test_new_work_before_the_delay_puts_the_trim_off() -> None:
    runs = Runs()
    idle = IdleTrim(runs, delay=0.05)
    idle.busy()
    idle.done()
    await asyncio.sleep(0.03)
    idle.busy()
    await asyncio.sleep(0.06)
    assert runs.calls == []
    idle.done()
    idle.cancel()
    await asyncio.sleep(0.08)
    assert runs.calls == []


async def test_a_shut_down_pool_is_not_an_error() -> None:
    def closed(_: Callable[[], bool]) -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    idle = IdleTrim(closed, delay=0.01)
    idle.busy()
    idle.done()
    await asyncio.sleep(0.05)  # the RuntimeError is swallowed, not logged by the loop


_PROCESS = textwrap.dedent(
    """
    import asyncio, os
    from app.config import load_settings
    from app.core import security

    security.TRIM_AFTER_IDLE_SECONDS = 0.3

    def rss():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) // 1024

    async def main():
        settings = load_settings(
            environment="development", database_url="postgresql+asyncpg://u@h/d",
            redis_url="redis://h/0", jwt_secret="x" * 64, password_hash_concurrency=2,
        )
        passwords = security.Passwords(settings)
        hashed = passwords.hash_sync("correct horse")
        before = rss()
        for _ in range(3):
            await asyncio.gather(*(passwords.verify(hashed, "correct horse") for _ in range(4)))
        held = rss()
        await asyncio.sleep(1.0)
        print(before, held, rss())
        passwords.close()

    asyncio.run(main())
    """
)


@glibc
@pytest.mark.slow
def test_a_burst_of_hashes_keeps_its_memory_only_until_it_is_over() -> None:
    env_free = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _PROCESS], capture_output=True, text=True, check=True, env=env_free
    )
    before, held, after = (int(value) for value in out.stdout.split())
    # argon2 takes 19 MiB per hash, in each of the two hashing threads: without the trim a
    # worker kept them for good (after - before was 38 MB).
    assert after - before <= 8, (before, held, after)


def test_a_worker_that_touches_no_image_loads_no_s3_client(tmp_path: object) -> None:
    """aiobotocore and botocore (about 18 MB of a worker) load with the first image call, not
    with the app: building it and opening its object store imports neither."""
    code = textwrap.dedent(
        """
        import asyncio, sys
        from app.config import load_settings
        from app.core.storage import open_object_store
        from app.main import create_app
        settings = load_settings(
            database_url="postgresql+asyncpg://x@127.0.0.1/x", redis_url="redis://127.0.0.1:1/0",
            jwt_secret="x" * 40, storage_url="s3://media?endpoint=http://127.0.0.1:1",
        )
        create_app(settings)
        async def main():
            async with open_object_store(settings) as store:
                assert store is not None and store.bucket == "media"
        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("botocore", "aiobotocore"))
        print(len(loaded))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "0"
