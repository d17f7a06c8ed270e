"""The users routes: the caller's own account and the admins' view of every account."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from httpx import AsyncClient

from app.features.users.models import Role
from app.features.users.queries import UserView
from app.features.users.schemas import UserOut
from tests.conftest import DEFAULT_PASSWORD, HeadersFactory, UserFactory
from tests.integration.auth.helpers import API, assert_token_pair, bearer, claims, login
from tests.problems import assert_problem

NEW_PASSWORD = "another long passphrase"


class TestMe:
    async def test_reads_the_callers_account_without_secrets(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user(email="me@example.com", full_name="Me Myself")
        response = await client.get(f"{API}/users/me", headers=await auth_headers(user))
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == str(user.id)
        assert (body["email"], body["full_name"], body["role"]) == (
            "me@example.com",
            "Me Myself",
            "user",
        )
        assert "password_hash" not in body
        assert "token_version" not in body
        assert user.password_hash not in response.text
        assert response.headers["content-type"] == "application/json"
        # The bytes UserOut would give (the route serialises the view itself).
        view = UserView(**{name: getattr(user, name) for name in UserView.__dataclass_fields__})
        assert response.content == UserOut.model_validate(view).model_dump_json().encode()

    async def test_without_a_token_is_401(self, client: AsyncClient) -> None:
        response = await client.get(f"{API}/users/me")
        assert_problem(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_patch_changes_the_name(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user = await make_user()
        response = await client.patch(
            f"{API}/users/me", json={"full_name": "  New Name "}, headers=await auth_headers(user)
        )
        assert response.status_code == 200
        assert response.json()["full_name"] == "New Name"
        stored = await db_conn.fetchval("SELECT full_name FROM users WHERE id = $1", user.id)
        assert stored == "New Name"

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"role": "admin"}, id="role"),
            pytest.param({"is_active": False}, id="is_active"),
            pytest.param({"email": "x@example.com"}, id="email"),
            pytest.param({"full_name": None}, id="null-name"),
            pytest.param({"full_name": "   "}, id="blank-name"),
        ],
    )
    async def test_patch_refuses_what_a_user_may_not_change(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
        body: dict[str, object],
    ) -> None:
        user = await make_user()
        response = await client.patch(
            f"{API}/users/me", json=body, headers=await auth_headers(user)
        )
        problem = assert_problem(response, 422, "VALIDATION_ERROR")
        assert problem["errors"][0]["loc"][0] == "body"
        row = await db_conn.fetchrow(
            "SELECT role, is_active, email FROM users WHERE id = $1", user.id
        )
        assert row is not None
        assert (row["role"], row["is_active"], row["email"]) == ("user", True, user.email)


class TestPasswordChange:
    async def test_kills_every_earlier_token_while_the_new_pair_works(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="pw@example.com")
        caller = await login(client, "pw@example.com")
        elsewhere = await login(client, "pw@example.com")
        response = await client.post(
            f"{API}/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(caller["access_token"]),
        )
        fresh = assert_token_pair(response)
        for old in (caller, elsewhere):
            me = await client.get(f"{API}/users/me", headers=bearer(old["access_token"]))
            assert_problem(me, 401, "UNAUTHORIZED")
            refreshed = await client.post(
                f"{API}/auth/refresh", json={"refresh_token": old["refresh_token"]}
            )
            assert_problem(refreshed, 401, "UNAUTHORIZED")
        me = await client.get(f"{API}/users/me", headers=bearer(fresh["access_token"]))
        assert me.status_code == 200
        assert_token_pair(
            await client.post(f"{API}/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
        )
        assert claims(fresh["access_token"])["ver"] == user.token_version + 1
        live = await db_conn.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL AND used_at IS NULL"
        )
        assert live == 1
        old_login = await client.post(
            f"{API}/auth/login", json={"email": "pw@example.com", "password": DEFAULT_PASSWORD}
        )
        assert_problem(old_login, 401, "INVALID_CREDENTIALS")
        await login(client, "pw@example.com", NEW_PASSWORD)

    async def test_wrong_current_password_is_400_and_changes_nothing(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        user = await make_user()
        headers = await auth_headers(user)
        response = await client.post(
            f"{API}/users/me/password",
            json={"current_password": "not-my-password", "new_password": NEW_PASSWORD},
            headers=headers,
        )
        assert_problem(response, 400, "INVALID_CREDENTIALS")
        row = await db_conn.fetchrow(
            "SELECT password_hash, token_version FROM users WHERE id = $1", user.id
        )
        assert row is not None
        assert (row["password_hash"], row["token_version"]) == (user.password_hash, 0)
        assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 200

    async def test_common_new_password_is_422(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user()
        response = await client.post(
            f"{API}/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": "iloveyou"},
            headers=await auth_headers(user),
        )
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"] == ["body", "new_password"]


class TestDeactivateMe:
    async def test_locks_the_account_out_at_once(
        self, client: AsyncClient, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user(email="bye@example.com")
        pair = await login(client, "bye@example.com")
        response = await client.delete(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert response.status_code == 204
        me = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert_problem(me, 401, "UNAUTHORIZED")
        refreshed = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert_problem(refreshed, 401, "UNAUTHORIZED")
        again = await client.post(
            f"{API}/auth/login", json={"email": "bye@example.com", "password": DEFAULT_PASSWORD}
        )
        assert_problem(again, 403, "ACCOUNT_DISABLED")
        row = await db_conn.fetchrow("SELECT is_active FROM users WHERE id = $1", user.id)
        assert row is not None
        assert row["is_active"] is False

    async def test_the_last_admin_gets_409_last_admin(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        admin = await make_user(role=Role.admin)
        await make_user(role=Role.admin, is_active=False)
        response = await client.delete(f"{API}/users/me", headers=await auth_headers(admin))
        assert_problem(response, 409, "LAST_ADMIN")
        assert await db_conn.fetchval("SELECT is_active FROM users WHERE id = $1", admin.id)

    async def test_an_admin_may_leave_while_another_admin_remains(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        await make_user(role=Role.admin)
        response = await client.delete(f"{API}/users/me", headers=await auth_headers(admin))
        assert response.status_code == 204


class TestAdminList:
    async def test_pages_newest_first(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        users = [await make_user() for _ in range(4)]
        headers = await auth_headers(admin)
        first = await client.get(f"{API}/users?page=1&page_size=2", headers=headers)
        assert first.status_code == 200
        body = first.json()
        assert (body["total"], body["page"], body["page_size"], body["has_next"]) == (
            5,
            1,
            2,
            True,
        )
        assert [item["id"] for item in body["items"]] == [str(users[3].id), str(users[2].id)]
        last = (await client.get(f"{API}/users?page=3&page_size=2", headers=headers)).json()
        assert [item["id"] for item in last["items"]] == [str(admin.id)]
        assert last["has_next"] is False
        beyond = (await client.get(f"{API}/users?page=9&page_size=2", headers=headers)).json()
        assert (beyond["items"], beyond["total"], beyond["has_next"]) == ([], 5, False)

    async def test_filters_by_role_activity_and_text(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin, email="root@corp.example")
        grace = await make_user(email="grace@navy.example", full_name="Grace Hopper")
        off = await make_user(email="off@corp.example", full_name="Ola Off", is_active=False)
        await make_user(email="linus@kernel.example", full_name="Linus")
        headers = await auth_headers(admin)

        async def ids(query: str) -> list[str]:
            response = await client.get(f"{API}/users?{query}", headers=headers)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()["items"]]

        assert await ids("role=admin") == [str(admin.id)]
        assert await ids("is_active=false") == [str(off.id)]
        assert await ids("q=HOPPER") == [str(grace.id)]
        assert await ids("q=CORP.example") == [str(off.id), str(admin.id)]
        assert await ids("q=corp&is_active=true") == [str(admin.id)]
        assert await ids("q=%25") == []  # a literal %, not a wildcard

    @pytest.mark.parametrize(
        "query",
        ["page=0", "page_size=0", "page_size=101", "page=x", "role=owner", "is_active=maybe"],
    )
    async def test_bad_query_parameters_are_422(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        query: str,
    ) -> None:
        admin = await make_user(role=Role.admin)
        response = await client.get(f"{API}/users?{query}", headers=await auth_headers(admin))
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"][0] == "query"

    async def test_is_403_for_a_user_and_401_without_a_token(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user()
        forbidden = await client.get(f"{API}/users", headers=await auth_headers(user))
        assert_problem(forbidden, 403, "FORBIDDEN")
        assert_problem(await client.get(f"{API}/users"), 401, "UNAUTHORIZED")


class TestAdminGet:
    async def test_reads_one_account(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        user = await make_user(email="one@example.com")
        response = await client.get(f"{API}/users/{user.id}", headers=await auth_headers(admin))
        assert response.status_code == 200
        assert response.json()["email"] == "one@example.com"

    async def test_unknown_id_is_404_and_a_bad_id_422(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        headers = await auth_headers(admin)
        missing = await client.get(
            f"{API}/users/0190f1c2-0000-7000-8000-000000000000", headers=headers
        )
        assert_problem(missing, 404, "NOT_FOUND")
        assert_problem(
            await client.get(f"{API}/users/42", headers=headers), 422, "VALIDATION_ERROR"
        )

    async def test_is_403_for_a_user(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user()
        response = await client.get(f"{API}/users/{user.id}", headers=await auth_headers(user))
        assert_problem(response, 403, "FORBIDDEN")


class TestAdminUpdate:
    async def test_role_change_invalidates_the_users_tokens(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        admin = await make_user(role=Role.admin)
        await make_user(email="promo@example.com")
        pair = await login(client, "promo@example.com")
        response = await client.patch(
            f"{API}/users/{claims(pair['access_token'])['sub']}",
            json={"role": "admin", "full_name": "Promoted"},
            headers=await auth_headers(admin),
        )
        assert response.status_code == 200
        assert (response.json()["role"], response.json()["full_name"]) == ("admin", "Promoted")
        stale = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert_problem(stale, 401, "UNAUTHORIZED")
        refreshed = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert_problem(refreshed, 401, "UNAUTHORIZED")
        fresh = await login(client, "promo@example.com")
        assert claims(fresh["access_token"])["role"] == "admin"
        assert (
            await db_conn.fetchval(
                "SELECT token_version FROM users WHERE email = 'promo@example.com'"
            )
            == 1
        )

    async def test_deactivation_locks_the_user_out_at_once(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        user = await make_user(email="bad@example.com")
        pair = await login(client, "bad@example.com")
        response = await client.patch(
            f"{API}/users/{user.id}", json={"is_active": False}, headers=await auth_headers(admin)
        )
        assert response.status_code == 200
        assert response.json()["is_active"] is False
        locked = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert_problem(locked, 401, "UNAUTHORIZED")

    async def test_renaming_keeps_the_users_tokens(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        user = await make_user()
        headers = await auth_headers(user)
        response = await client.patch(
            f"{API}/users/{user.id}",
            json={"full_name": "Renamed"},
            headers=await auth_headers(admin),
        )
        assert response.status_code == 200
        assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 200

    @pytest.mark.parametrize(
        "change", [{"role": "user"}, {"is_active": False}], ids=["demote", "deactivate"]
    )
    async def test_the_last_active_admin_cannot_be_demoted_or_deactivated(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
        change: dict[str, object],
    ) -> None:
        admin = await make_user(role=Role.admin)
        response = await client.patch(
            f"{API}/users/{admin.id}", json=change, headers=await auth_headers(admin)
        )
        assert_problem(response, 409, "LAST_ADMIN")
        row = await db_conn.fetchrow("SELECT role, is_active FROM users WHERE id = $1", admin.id)
        assert row is not None
        assert (row["role"], row["is_active"]) == ("admin", True)

    async def test_an_admin_can_be_demoted_while_another_remains(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        other = await make_user(role=Role.admin)
        response = await client.patch(
            f"{API}/users/{other.id}", json={"role": "user"}, headers=await auth_headers(admin)
        )
        assert response.status_code == 200
        assert response.json()["role"] == "user"

    async def test_unknown_fields_and_users_are_refused(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        admin = await make_user(role=Role.admin)
        headers = await auth_headers(admin)
        extra = await client.patch(
            f"{API}/users/{admin.id}", json={"email": "x@example.com"}, headers=headers
        )
        assert_problem(extra, 422, "VALIDATION_ERROR")
        missing = await client.patch(
            f"{API}/users/0190f1c2-0000-7000-8000-000000000000",
            json={"full_name": "X"},
            headers=headers,
        )
        assert_problem(missing, 404, "NOT_FOUND")

    async def test_is_403_for_a_user(
        self, client: AsyncClient, make_user: UserFactory, auth_headers: HeadersFactory
    ) -> None:
        user = await make_user()
        response = await client.patch(
            f"{API}/users/{user.id}", json={"role": "admin"}, headers=await auth_headers(user)
        )
        assert_problem(response, 403, "FORBIDDEN")


class TestLastAdminRace:
    async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
        self,
        client: AsyncClient,
        make_user: UserFactory,
        auth_headers: HeadersFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        first = await make_user(role=Role.admin)
        second = await make_user(role=Role.admin)
        one, two = await asyncio.gather(
            client.patch(
                f"{API}/users/{second.id}", json={"role": "user"}, headers=await auth_headers(first)
            ),
            client.patch(
                f"{API}/users/{first.id}", json={"role": "user"}, headers=await auth_headers(second)
            ),
        )
        assert sorted([one.status_code, two.status_code]) == [200, 409]
        admins = await db_conn.fetchval(
            "SELECT count(*) FROM users WHERE role = 'admin' AND is_active"
        )
        assert admins == 1
