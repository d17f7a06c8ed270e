"""The stand-ins `app.core.websocket_protocol` gives uvicorn's WebSocket protocol: they behave as
the asyncio originals do where uvicorn uses them, and offer every method uvicorn calls."""

from __future__ import annotations

import asyncio
import inspect
import re

import pytest
from uvicorn.protocols.websockets import websockets_sansio_impl

from app.core.websocket_protocol import Flag, Inbox, WebSocketProtocol


def _methods_called_on(attribute: str) -> set[str]:
    source = inspect.getsource(websockets_sansio_impl)
    return set(re.findall(rf"self\.{attribute}\.(\w+)\(", source))


def test_uvicorn_calls_nothing_the_stand_ins_lack() -> None:
    queue_methods = _methods_called_on("queue")
    flag_methods = _methods_called_on("writable")
    assert queue_methods >= {"put_nowait", "get"}, "uvicorn's protocol changed: review the Inbox"
    assert flag_methods >= {"set", "wait"}, "uvicorn's protocol changed: review the Flag"
    assert all(hasattr(Inbox, name) for name in queue_methods), queue_methods
    assert all(hasattr(Flag, name) for name in flag_methods), flag_methods
    assert issubclass(WebSocketProtocol, websockets_sansio_impl.WebSocketsSansIOProtocol)


async def test_the_inbox_is_first_in_first_out_and_waits_when_empty() -> None:
    inbox: Inbox[int] = Inbox()
    assert inbox.empty()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await getter == 1
    assert not inbox.empty()
    assert await inbox.get() == 2
    assert inbox.empty()


async def test_a_cancelled_get_takes_nothing() -> None:
    inbox: Inbox[str] = Inbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("kept")  # woken, but cancelled before it runs
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert not inbox.empty()
    assert await inbox.get() == "kept"


async def test_the_flag_wakes_its_waiters_and_can_be_cleared() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    flag.set()
    await asyncio.gather(*waiters)
    assert flag.is_set()
    await flag.wait()  # set: returns at once
    flag.clear()
    waiter = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    flag.set()  # a cancelled waiter is gone: nothing to wake
    assert flag.is_set()
