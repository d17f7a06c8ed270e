"""The proxy passes the event streams through: WebSocket upgrades, SSE unbuffered."""

from __future__ import annotations

import re
from pathlib import Path

CONF = (Path(__file__).resolve().parents[3] / "deploy" / "nginx.conf").read_text()


def _location(path: str) -> str:
    match = re.search(r"location = " + re.escape(path) + r" \{(.*?)\n        \}", CONF, re.S)
    assert match, f"no exact location for {path}"
    return match.group(1)


def test_the_websocket_location_upgrades_the_connection() -> None:
    block = _location("/api/v1/events/ws")
    assert "proxy_http_version 1.1;" in block
    assert "proxy_set_header Upgrade $http_upgrade;" in block
    assert "proxy_set_header Connection $connection_upgrade;" in block
    assert "map $http_upgrade $connection_upgrade" in CONF
    # Longer than the app's heartbeat (25 s at most), or idle streams would be cut.
    assert re.search(r"proxy_read_timeout (\d+)h;", block)


def test_the_sse_location_is_not_buffered() -> None:
    block = _location("/api/v1/events")
    assert "proxy_buffering off;" in block
    assert "proxy_cache off;" in block
    assert re.search(r"proxy_read_timeout (\d+)h;", block)
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in block
