"""Which address the rate limits count: the peer, or X-Forwarded-For behind trusted proxies."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from starlette.requests import Request

from app.config import load_settings
from app.core.ratelimit import RateLimiter, rate_limit_identity


def limiter(trusted: str) -> RateLimiter:
    settings = load_settings(
        database_url="postgresql+asyncpg://localhost/x",
        redis_url="redis://127.0.0.1:6379/0",
        jwt_secret="unit-" + "s" * 40,
        trusted_proxies=trusted,
    )
    return RateLimiter(settings, Redis.from_url(settings.redis_url))


def request(peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        pytest.param("", "10.0.0.5", "1.2.3.4", "10.0.0.5", id="no-proxies-trusted"),
        pytest.param("10.0.0.0/8", "192.0.2.1", "1.2.3.4", "192.0.2.1", id="untrusted-peer"),
        pytest.param("10.0.0.0/8", "10.0.0.5", "1.2.3.4", "1.2.3.4", id="trusted-peer"),
        pytest.param(
            "10.0.0.0/8", "10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.9", "1.2.3.4", id="proxy-chain"
        ),
        pytest.param("10.0.0.0/8", "10.0.0.5", "10.0.0.7", "10.0.0.5", id="only-proxies"),
        pytest.param("10.0.0.0/8", "10.0.0.5", "not-an-ip", "10.0.0.5", id="garbage-hop"),
        pytest.param("10.0.0.0/8", "10.0.0.5", None, "10.0.0.5", id="no-header"),
        pytest.param("::1", "::1", "2001:db8::7", "2001:db8::7", id="ipv6"),
        pytest.param(
            "nonsense, 10.0.0.5", "10.0.0.5", "1.2.3.4", "1.2.3.4", id="bad-entry-skipped"
        ),
    ],
)
def test_client_ip(trusted: str, peer: str, forwarded: str | None, expected: str) -> None:
    assert limiter(trusted).client_ip(request(peer, forwarded)) == expected


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        pytest.param("192.0.2.1", "192.0.2.1", id="ipv4"),
        pytest.param("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64", id="ipv6-per-64"),
        pytest.param("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64", id="same-64"),
        pytest.param("2001:db8:1:3::1", "2001:db8:1:3::/64", id="next-64"),
        pytest.param("::ffff:192.0.2.1", "192.0.2.1", id="ipv4-mapped"),
        pytest.param("unknown", "unknown", id="not-an-address"),
    ],
)
def test_rate_limit_identity(address: str, bucket: str) -> None:
    assert rate_limit_identity(address) == bucket
