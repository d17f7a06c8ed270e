"""Login sessions under races (issue 12): a logout or a reuse detection racing a refresh never
leaves a working token; the grace window for a refresh token presented twice at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from httpx import AsyncClient, Response

from tests.conftest import UserFactory
from tests.integration.auth.helpers import (
    API,
    age_rotations,
    assert_token_pair,
    bearer,
    claims,
    login,
)
from tests.problems import assert_problem

RACES = 60


async def refresh(client: AsyncClient, token: str) -> Response:
    return await client.post(f"{API}/auth/refresh", json={"refresh_token": token})


async def delayed(delay: float, request: Any) -> Response:
    await asyncio.sleep(delay)
    response: Response = await request
    return response


async def still_works(client: AsyncClient, pair: dict[str, Any]) -> list[str]:
    """What of a pair still works: its access token, its refresh token."""
    working = []
    me = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
    if me.status_code != 401:
        working.append(f"access {me.status_code}")
    again = await refresh(client, pair["refresh_token"])
    if again.status_code != 401:
        working.append(f"refresh {again.status_code}")
    return working


class TestLogoutRacingRefresh:
    async def test_no_race_leaves_a_working_token(
        self, make_client: Callable[..., Any], make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        client: AsyncClient = await make_client(rate_limit_enabled=False)
        await make_user(email="racer@example.com")
        leaks: dict[int, list[str]] = {}
        refreshed = 0
        for race in range(RACES):
            pair = await login(client, "racer@example.com")
            # Vary who starts first, by up to a few milliseconds either way.
            lead = (race % 7) * 0.001
            logout, renewed = await asyncio.gather(
                delayed(
                    lead if race % 2 else 0,
                    client.post(
                        f"{API}/auth/logout",
                        json={"refresh_token": pair["refresh_token"]},
                        headers=bearer(pair["access_token"]),
                    ),
                ),
                delayed(0 if race % 2 else lead, refresh(client, pair["refresh_token"])),
            )
            assert logout.status_code == 204, logout.text
            working = await still_works(client, pair)
            if renewed.status_code == 200:
                refreshed += 1
                working += await still_works(client, assert_token_pair(renewed))
            else:
                assert_problem(renewed, 401, "UNAUTHORIZED")
            if working:
                leaks[race] = working
            sid = claims(pair["access_token"])["sid"]
            assert await db_conn.fetchval(
                "SELECT revoked_at IS NOT NULL FROM login_sessions WHERE id = $1", sid
            )
            assert not await db_conn.fetchval(
                "SELECT count(*) FROM refresh_tokens WHERE session_id = $1 AND revoked_at IS NULL",
                sid,
            )
        assert leaks == {}, f"{len(leaks)} of {RACES} races left a working token: {leaks}"
        print(f"refresh won {refreshed} of {RACES} races")  # noqa: T201 - shown with -s


class TestReuseRacingRefresh:
    async def test_a_replayed_token_racing_the_live_one_leaves_no_working_token(
        self, make_client: Callable[..., Any], make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        """The thief replays the rotated token (past the grace window) while the owner
        refreshes the live one: whoever comes first, the session ends and stays ended."""
        client: AsyncClient = await make_client(rate_limit_enabled=False)
        await make_user(email="owner@example.com")
        leaks: dict[int, list[str]] = {}
        for race in range(RACES // 2):
            stolen = await login(client, "owner@example.com")
            live = assert_token_pair(await refresh(client, stolen["refresh_token"]))
            await age_rotations(db_conn)
            lead = (race % 5) * 0.001
            replay, renewed = await asyncio.gather(
                delayed(lead if race % 2 else 0, refresh(client, stolen["refresh_token"])),
                delayed(0 if race % 2 else lead, refresh(client, live["refresh_token"])),
            )
            assert_problem(replay, 401, "UNAUTHORIZED")
            working = await still_works(client, live)
            if renewed.status_code == 200:
                working += await still_works(client, assert_token_pair(renewed))
            if working:
                leaks[race] = working
        assert leaks == {}, f"{len(leaks)} races left a working token: {leaks}"


class TestGraceWindow:
    async def test_the_replayed_pair_is_the_one_already_issued(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        await make_user(email="tabs@example.com")
        pair = await login(client, "tabs@example.com")
        first = assert_token_pair(await refresh(client, pair["refresh_token"]))
        second = assert_token_pair(await refresh(client, pair["refresh_token"]))
        assert second == first
        # One successor only: the login's token (used) and the pair's (live).
        rows = await db_conn.fetch("SELECT used_at, revoked_at FROM refresh_tokens")
        assert sorted(row["used_at"] is None for row in rows) == [False, True]
        assert all(row["revoked_at"] is None for row in rows)
        assert (await still_works(client, first)) == ["access 200", "refresh 200"]

    async def test_past_the_window_the_same_token_is_reuse(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        await make_user(email="late@example.com")
        pair = await login(client, "late@example.com")
        first = assert_token_pair(await refresh(client, pair["refresh_token"]))
        await age_rotations(db_conn, seconds=6)  # the default window is 5 s
        assert_problem(await refresh(client, pair["refresh_token"]), 401, "UNAUTHORIZED")
        assert (await still_works(client, first)) == []

    async def test_once_the_successor_was_rotated_the_old_token_is_reuse(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="chain@example.com")
        pair = await login(client, "chain@example.com")
        first = assert_token_pair(await refresh(client, pair["refresh_token"]))
        second = assert_token_pair(await refresh(client, first["refresh_token"]))
        assert_problem(await refresh(client, pair["refresh_token"]), 401, "UNAUTHORIZED")
        assert (await still_works(client, second)) == []

    async def test_a_logged_out_session_gets_nothing_in_the_window(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="gone@example.com")
        pair = await login(client, "gone@example.com")
        first = assert_token_pair(await refresh(client, pair["refresh_token"]))
        out = await client.post(
            f"{API}/auth/logout",
            json={"refresh_token": first["refresh_token"]},
            headers=bearer(first["access_token"]),
        )
        assert out.status_code == 204
        assert_problem(await refresh(client, pair["refresh_token"]), 401, "UNAUTHORIZED")

    async def test_a_password_change_in_between_refuses_the_replay(
        self, client: AsyncClient, make_user: UserFactory
    ) -> None:
        await make_user(email="pw@example.com")
        pair = await login(client, "pw@example.com")
        first = assert_token_pair(await refresh(client, pair["refresh_token"]))
        changed = await client.post(
            f"{API}/users/me/password",
            json={
                "current_password": "correct-horse-battery-staple",
                "new_password": "a new long passphrase",
            },
            headers=bearer(first["access_token"]),
        )
        assert_token_pair(changed)
        assert_problem(await refresh(client, pair["refresh_token"]), 401, "UNAUTHORIZED")
