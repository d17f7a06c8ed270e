"""PostgreSQL stopped under the running app (a private server), and started again (issue 12).

Requests that need the database get 503 `SERVICE_UNAVAILABLE` with `Retry-After` while it is
down (refused, reset mid-query, the pool's wait timed out), with one warning line each and no
traceback; the app serves again as soon as the server is back. The worker logs one line per job
that met the outage and retries it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from arq.worker import Retry
from httpx import AsyncClient, Response

from app.cli import run_migrations
from app.core.database import create_engine, create_session_factory
from app.core.email import send_email
from app.core.jobs import outbox_job
from app.core.logging import configure_logging
from app.worker import survives_outages
from tests.conftest import DEFAULT_PASSWORD, create_database
from tests.integration.auth.helpers import API, bearer, login
from tests.private_postgres import PrivatePostgres
from tests.problems import assert_problem

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().create()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
async def private_db(private_pg: PrivatePostgres) -> AsyncIterator[str]:
    url = await create_database(private_pg.url(), "outage")
    await asyncio.to_thread(run_migrations, url)
    return url


@pytest.fixture
def running(private_pg: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private server, up again after the test whatever happened."""
    yield private_pg
    with contextlib.suppress(Exception):  # it was running
        private_pg.start()


def log_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def assert_unavailable(response: Response) -> None:
    body = assert_problem(response, 503, "SERVICE_UNAVAILABLE")
    assert int(response.headers["retry-after"]) >= 1
    assert "Internal server error" not in body["detail"]
    for leak in ("asyncpg", "sqlalchemy", "Traceback", "127.0.0.1"):
        assert leak not in response.text


async def register_and_login(client: AsyncClient, email: str) -> dict[str, Any]:
    response = await client.post(
        f"{API}/auth/register",
        json={"email": email, "password": DEFAULT_PASSWORD, "full_name": "Outage"},
    )
    assert response.status_code == 201, response.text
    return await login(client, email)


class TestDatabaseRestartUnderTheApp:
    async def test_in_flight_and_later_requests_get_503_then_the_app_recovers(
        self,
        make_client: Callable[..., Any],
        private_db: str,
        running: PrivatePostgres,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        client: AsyncClient = await make_client(
            database_url=private_db,
            db_connect_timeout_seconds=1,
            db_pool_timeout_seconds=1,
            rate_limit_enabled=False,
        )
        pair = await register_and_login(client, "outage@example.com")
        headers = bearer(pair["access_token"])
        statuses: list[int] = []
        unavailable: list[Response] = []
        stop = asyncio.Event()

        async def traffic(n: int) -> None:
            """Reads and writes, back to back, through the stop and the start."""
            while not stop.is_set():
                if n % 2:
                    response = await client.get(f"{API}/users/me", headers=headers)
                else:
                    response = await client.patch(
                        f"{API}/users/me", json={"full_name": f"Name {n}"}, headers=headers
                    )
                statuses.append(response.status_code)
                if response.status_code == 503:
                    unavailable.append(response)
                await asyncio.sleep(0.01)

        capfd.readouterr()
        tasks = [asyncio.create_task(traffic(n)) for n in range(6)]
        await asyncio.sleep(0.5)
        served_before = len(statuses)
        await asyncio.to_thread(running.stop, "fast")  # sessions end mid-request
        await asyncio.sleep(1.5)
        down = [await client.get(f"{API}/users/me", headers=headers) for _ in range(3)]
        await asyncio.to_thread(running.start)
        # Recovery: a read and a write succeed again within a few seconds.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            me = await client.get(f"{API}/users/me", headers=headers)
            if me.status_code == 200:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
        assert served_before > 0
        assert me.status_code == 200, me.text
        patched = await client.patch(
            f"{API}/users/me", json={"full_name": "After"}, headers=headers
        )
        assert patched.status_code == 200, patched.text
        for response in down:
            assert_unavailable(response)
        assert set(statuses) <= {200, 503}, statuses
        assert unavailable, "no request met the outage"
        for response in unavailable:
            assert_unavailable(response)
        captured = capfd.readouterr()
        output = captured.err + captured.out
        assert "Traceback" not in output
        lines = log_lines(output)
        warnings = [line for line in lines if line["event"] == "request.service_unavailable"]
        answered_503 = [
            line for line in lines if line["event"] == "http.request" and line["status"] == 503
        ]
        assert len(warnings) == len(answered_503) == len(unavailable) + len(down)
        assert all(line["level"] == "warning" and "exception" not in line for line in warnings)
        assert not [line for line in lines if line["level"] in ("error", "critical")]

    async def test_a_login_while_the_database_is_down_is_503(
        self,
        make_client: Callable[..., Any],
        private_db: str,
        running: PrivatePostgres,
    ) -> None:
        client: AsyncClient = await make_client(
            database_url=private_db, db_connect_timeout_seconds=1, db_pool_timeout_seconds=1
        )
        await register_and_login(client, "login-outage@example.com")
        await asyncio.to_thread(running.stop, "immediate")
        response = await client.post(
            f"{API}/auth/login",
            json={"email": "login-outage@example.com", "password": DEFAULT_PASSWORD},
        )
        assert_unavailable(response)
        await asyncio.to_thread(running.start)
        await login(client, "login-outage@example.com")

    async def test_a_pool_that_cannot_hand_out_a_connection_in_time_is_503(
        self, make_client: Callable[..., Any], private_db: str
    ) -> None:
        apps: list[Any] = []
        client: AsyncClient = await make_client(
            setup=apps.append,
            database_url=private_db,
            db_pool_size=1,
            db_max_overflow=0,
            db_pool_timeout_seconds=0.3,
        )
        pair = await register_and_login(client, "pool@example.com")
        engine = apps[0].state.engine
        async with engine.connect() as held:  # the pool's only connection
            await held.exec_driver_sql("SELECT 1")
            response = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert_unavailable(response)
        ok = await client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
        assert ok.status_code == 200


class TestWorkerDuringAnOutage:
    async def test_a_job_that_meets_the_outage_logs_one_line_and_is_retried(
        self,
        private_db: str,
        running: PrivatePostgres,
        make_settings: Callable[..., Any],
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        settings = make_settings(database_url=private_db, db_connect_timeout_seconds=1)
        configure_logging("INFO", json=True)  # as `saas worker` does, onto the captured stderr
        engine = create_engine(settings)
        job = survives_outages(outbox_job(send_email))
        try:
            await asyncio.to_thread(running.stop, "fast")
            capfd.readouterr()
            for job_try in (1, 2, 3):
                ctx = {
                    "job_id": "01930000-0000-7000-8000-000000000001",
                    "job_try": job_try,
                    "session_factory": create_session_factory(engine),
                    "settings": settings,
                }
                with pytest.raises(Retry) as retry:
                    await job(ctx)
                assert retry.value.defer_score == 5000 * job_try
            captured = capfd.readouterr()
            output = captured.err + captured.out
            assert "Traceback" not in output
            lines = [line for line in log_lines(output) if line["event"].startswith("job.")]
            assert [line["event"] for line in lines] == ["job.service_unavailable"] * 3
            assert [line["job_try"] for line in lines] == [1, 2, 3]
        finally:
            await engine.dispose()
