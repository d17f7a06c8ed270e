"""Rate limits of the auth routes: per client IP, failed logins per account, shared in Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis

from tests.conftest import DEFAULT_PASSWORD, HeadersFactory, UserFactory
from tests.integration.auth.helpers import API, login
from tests.problems import assert_problem

PASSWORD = "registration passphrase"


def register_body(number: int) -> dict[str, str]:
    return {"email": f"r{number}@example.com", "password": PASSWORD, "full_name": "R"}


def assert_rate_limited(response: Any, limit: int) -> None:
    body = assert_problem(response, 429, "RATE_LIMITED")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert body["retry_after"] == retry_after
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"


class TestPerIpLimits:
    async def test_sixth_registration_in_a_minute_is_429_with_retry_after(
        self, client: AsyncClient, redis_client: Redis
    ) -> None:
        for number in range(5):
            response = await client.post(f"{API}/auth/register", json=register_body(number))
            assert response.status_code == 201
            assert response.headers["x-ratelimit-limit"] == "5"
            assert response.headers["x-ratelimit-remaining"] == str(4 - number)
        response = await client.post(f"{API}/auth/register", json=register_body(5))
        assert_rate_limited(response, 5)
        assert [key async for key in redis_client.scan_iter("ratelimit:*register*")]

    async def test_login_and_token_share_one_bucket_of_ten(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="bucket@example.com")
        for _ in range(5):
            await login(client, "bucket@example.com")
            response = await client.post(
                f"{API}/auth/token",
                data={"username": "bucket@example.com", "password": DEFAULT_PASSWORD},
            )
            assert response.status_code == 200
        over = await client.post(
            f"{API}/auth/login", json={"email": "bucket@example.com", "password": DEFAULT_PASSWORD}
        )
        assert_rate_limited(over, 10)
        over_form = await client.post(
            f"{API}/auth/token",
            data={"username": "bucket@example.com", "password": DEFAULT_PASSWORD},
        )
        assert_rate_limited(over_form, 10)

    async def test_forgot_password_allows_three_a_minute(self, client: AsyncClient) -> None:
        for _ in range(3):
            response = await client.post(
                f"{API}/auth/forgot-password", json={"email": "x@example.com"}
            )
            assert response.status_code == 202
        over = await client.post(f"{API}/auth/forgot-password", json={"email": "x@example.com"})
        assert_rate_limited(over, 3)

    async def test_verification_resend_allows_three_a_minute(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user(is_verified=False)
        headers = await auth_headers(user)
        for _ in range(3):
            response = await client.post(f"{API}/auth/verify-email/resend", headers=headers)
            assert response.status_code == 202
        over = await client.post(f"{API}/auth/verify-email/resend", headers=headers)
        assert_rate_limited(over, 3)

    async def test_refresh_limit_comes_from_settings(self, make_client: Callable[..., Any]) -> None:
        client: AsyncClient = await make_client(rate_limit_refresh="2/minute")
        for _ in range(2):
            response = await client.post(f"{API}/auth/refresh", json={"refresh_token": "x"})
            assert response.status_code == 401
        over = await client.post(f"{API}/auth/refresh", json={"refresh_token": "x"})
        assert_rate_limited(over, 2)

    async def test_limits_can_be_switched_off(self, make_client: Callable[..., Any]) -> None:
        client: AsyncClient = await make_client(rate_limit_enabled=False)
        for _ in range(4):
            response = await client.post(
                f"{API}/auth/forgot-password", json={"email": "x@example.com"}
            )
            assert response.status_code == 202
            assert "x-ratelimit-limit" not in response.headers


class TestClientAddress:
    async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
        self, client: AsyncClient
    ) -> None:
        for number in range(5):
            response = await client.post(
                f"{API}/auth/register",
                json=register_body(number),
                headers={"X-Forwarded-For": f"203.0.113.{number}"},
            )
            assert response.status_code == 201
        response = await client.post(
            f"{API}/auth/register",
            json=register_body(9),
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert_rate_limited(response, 5)

    async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
        self, make_client: Callable[..., Any]
    ) -> None:
        client: AsyncClient = await make_client(trusted_proxies="127.0.0.0/8")
        for number in range(7):
            response = await client.post(
                f"{API}/auth/register",
                json=register_body(number),
                # A client-forged left part, then the address our proxy saw.
                headers={"X-Forwarded-For": f"6.6.6.6, 203.0.113.{number}"},
            )
            assert response.status_code == 201, response.text
        same = [
            await client.post(
                f"{API}/auth/register",
                json=register_body(100 + number),
                headers={"X-Forwarded-For": f"203.0.113.{number % 2}, 203.0.113.99"},
            )
            for number in range(6)
        ]
        assert [response.status_code for response in same] == [201] * 5 + [429]


class TestIpv6Clients:
    async def test_addresses_of_one_slash_64_share_a_bucket(
        self, make_client: Callable[..., Any]
    ) -> None:
        apps: list[FastAPI] = []
        await make_client(setup=apps.append)

        async def register_from(address: str, number: int) -> int:
            async with AsyncClient(
                transport=ASGITransport(app=apps[0], client=(address, 1)),
                base_url="http://testserver",
            ) as http:
                response = await http.post(f"{API}/auth/register", json=register_body(number))
                return response.status_code

        # A host hopping between addresses of its /64 gets the limit of one client (5/minute).
        hops = [await register_from(f"2001:db8:0:1::{n + 1:x}", n) for n in range(6)]
        assert hops == [201] * 5 + [429]
        # Another /64 is another client.
        assert await register_from("2001:db8:0:2::1", 50) == 201


class TestFailedLoginsPerAccount:
    async def test_after_the_limit_every_attempt_is_429_even_with_the_right_password(
        self, make_client: Callable[..., Any], make_user: UserFactory
    ) -> None:
        apps: list[FastAPI] = []
        client: AsyncClient = await make_client(
            setup=apps.append, rate_limit_failed_logins="3/hour"
        )
        await make_user(email="target@example.com")
        await make_user(email="bystander@example.com")
        for _ in range(3):
            wrong = await client.post(
                f"{API}/auth/login",
                json={"email": "Target@Example.com", "password": "guess-guess"},
            )
            assert_problem(wrong, 401, "INVALID_CREDENTIALS")
        locked = await client.post(
            f"{API}/auth/login",
            json={"email": "target@example.com", "password": DEFAULT_PASSWORD},
        )
        body = assert_problem(locked, 429, "RATE_LIMITED")
        assert 3500 < int(locked.headers["retry-after"]) <= 3600
        assert body["retry_after"] == int(locked.headers["retry-after"])
        # From another address too: the count is per account.
        other_ip = AsyncClient(
            transport=ASGITransport(app=apps[0], client=("192.0.2.9", 1)),
            base_url="http://testserver",
        )
        async with other_ip:
            elsewhere = await other_ip.post(
                f"{API}/auth/login",
                json={"email": "target@example.com", "password": DEFAULT_PASSWORD},
            )
        assert_problem(elsewhere, 429, "RATE_LIMITED")
        await login(client, "bystander@example.com")

    async def test_unknown_emails_are_counted_too(self, make_client: Callable[..., Any]) -> None:
        client: AsyncClient = await make_client(rate_limit_failed_logins="2/hour")
        for _ in range(2):
            response = await client.post(
                f"{API}/auth/login", json={"email": "nobody@example.com", "password": "x" * 9}
            )
            assert_problem(response, 401, "INVALID_CREDENTIALS")
        response = await client.post(
            f"{API}/auth/login", json={"email": "nobody@example.com", "password": "x" * 9}
        )
        assert_problem(response, 429, "RATE_LIMITED")

    async def test_a_successful_login_clears_the_count(
        self, make_client: Callable[..., Any], make_user: UserFactory
    ) -> None:
        client: AsyncClient = await make_client(rate_limit_failed_logins="3/hour")
        await make_user(email="forgetful@example.com")

        async def fail() -> int:
            response = await client.post(
                f"{API}/auth/login",
                json={"email": "forgetful@example.com", "password": "not-the-one"},
            )
            return response.status_code

        assert [await fail(), await fail()] == [401, 401]
        await login(client, "forgetful@example.com")
        assert [await fail(), await fail(), await fail(), await fail()] == [401, 401, 401, 429]


class TestRedisDown:
    async def test_limited_routes_answer_503_when_redis_is_unreachable(
        self, make_client: Callable[..., Any]
    ) -> None:
        client: AsyncClient = await make_client(
            redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=0.5
        )
        response = await client.post(
            f"{API}/auth/login", json={"email": "a@example.com", "password": "whatever-1"}
        )
        assert_problem(response, 503, "SERVICE_UNAVAILABLE")
        assert "redis" not in response.text.lower()
