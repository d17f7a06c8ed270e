"""A job runs if and only if its transaction commits, and a Redis outage never loses it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from jinja2 import TemplateNotFound, UndefinedError
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.database import session_scope
from app.core.email import queue_email
from app.core.jobs import enqueue, prune_outbox, relay_outbox
from app.core.redis import create_redis
from app.dev import SmtpSink, free_port
from app.main import create_app
from app.worker import drain, prune, relay
from tests.conftest import DrainJobs, SettingsFactory, app_of
from tests.integration.jobs.conftest import (
    LINK,
    add_email_routes,
    handed_off,
    outbox_rows,
    queued_job_ids,
    verify_context,
)


class TestCommittedWork:
    async def test_committed_email_is_handed_to_arq_after_the_response_and_delivered_once(
        self,
        api: AsyncClient,
        db_conn: asyncpg.Connection,
        arq_redis: ArqRedis,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        response = await api.post("/test/emails", json={"to": "ada@example.org"})

        assert response.status_code == 201
        assert response.headers["content-type"] == "application/json"
        [outbox_id] = response.json()["outbox_ids"]
        await handed_off(db_conn, outbox_id)
        [row] = await outbox_rows(db_conn)
        assert str(row["id"]) == outbox_id
        assert row["job_name"] == "send_email"
        assert json.loads(row["payload"]) == {
            "to": "ada@example.org",
            "template": "verify_email",
            "context": verify_context(),
        }
        assert row["sent_at"] is not None, "the fast path marks the row once ARQ has it"
        job_info = await Job(outbox_id, arq_redis).info()
        assert job_info is not None
        assert (job_info.function, job_info.args, job_info.kwargs) == ("send_email", (), {})
        assert smtp_sink.messages == [], "nothing is sent inside the request"

        await drain_jobs()
        await drain_jobs()

        [mail] = smtp_sink.messages
        assert mail.recipients == ["ada@example.org"]
        assert mail.subject == "Verify your email"
        assert mail.message["Message-ID"] == f"<{outbox_id}@example.com>"
        assert mail.message["From"] == "no-reply@example.com"
        assert mail.message.get_content_type() == "multipart/alternative"
        assert mail.links == [LINK]
        assert "Hello Ada <Lovelace>," in mail.text
        assert "Hello Ada &lt;Lovelace&gt;," in mail.html
        assert (
            'href="http://localhost:5173/verify-email?token=tok-123&amp;source=mail"' in mail.html
        )
        record = await db_conn.fetchrow("SELECT * FROM email_deliveries")
        assert record is not None
        assert str(record["outbox_id"]) == outbox_id
        assert (record["status"], record["attempts"], record["last_error"]) == ("sent", 1, None)
        assert record["recipient"] == "ada@example.org"
        assert record["sent_at"] is not None
        # The token is not kept at rest once the mail is out.
        [row] = await outbox_rows(db_conn)
        assert json.loads(row["payload"])["context"] == {}

    async def test_every_email_of_one_transaction_is_delivered_once(
        self,
        api: AsyncClient,
        db_conn: asyncpg.Connection,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        response = await api.post("/test/emails", json={"to": "ada@example.org", "count": 3})
        assert response.status_code == 201
        ids = response.json()["outbox_ids"]

        await drain_jobs()

        assert sorted(str(m.message["Message-ID"]) for m in smtp_sink.messages) == sorted(
            f"<{outbox_id}@example.com>" for outbox_id in ids
        )
        statuses = await db_conn.fetch("SELECT status FROM email_deliveries")
        assert [row["status"] for row in statuses] == ["sent"] * 3


class TestRolledBackWork:
    async def test_email_queued_in_a_rolled_back_transaction_is_never_delivered(
        self,
        api: AsyncClient,
        db_conn: asyncpg.Connection,
        redis_client: Redis,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        response = await api.post("/test/emails", json={"to": "ada@example.org", "fail": True})

        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "CONFLICT"
        assert await outbox_rows(db_conn) == []
        assert await redis_client.keys("arq:job:*") == []

        await drain_jobs()

        assert smtp_sink.messages == []
        assert await db_conn.fetchval("SELECT count(*) FROM email_deliveries") == 0


class TestRedisOutage:
    async def test_the_response_does_not_wait_for_a_hand_off_stuck_on_redis(
        self,
        make_settings: SettingsFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        # A Redis that accepts connections and never answers: a hand-off to it hangs until
        # its 30 s timeout. The response must not wait for it.
        accepted: list[asyncio.BaseTransport] = []
        failing = False

        class NeverAnswer(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.append(transport)
                if failing:  # Redis has "failed": every later connection is cut at once
                    transport.close()

        server = await asyncio.get_running_loop().create_server(NeverAnswer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        application = create_app(
            make_settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_seconds=30)
        )
        add_email_routes(application)
        try:
            async with (
                LifespanManager(application),
                AsyncClient(transport=ASGITransport(app=application), base_url="http://t") as api,
            ):
                dispatcher = application.state.job_dispatcher
                try:
                    async with asyncio.timeout(10):
                        response = await api.post("/test/emails", json={"to": "ada@example.org"})

                    assert response.status_code == 201
                    [outbox_id] = response.json()["outbox_ids"]
                    assert dispatcher.pending == 1, "the hand-off is still waiting for Redis"
                    [row] = await outbox_rows(db_conn)
                    assert str(row["id"]) == outbox_id
                    assert row["sent_at"] is None
                finally:
                    # Redis "fails": the hand-off gives up, the relay owns the row. Connections
                    # still to come (redis-py's retries, the event reader's) are cut as they
                    # arrive (`failing`): one left open kept the hand-off waiting for its whole
                    # 30 s (seen in CI).
                    failing = True
                    for transport in accepted:
                        transport.close()
                # redis-py retries a few times with backoff before it gives up (about 5 s).
                await dispatcher.drain(seconds=20)
                assert dispatcher.pending == 0
                [row] = await outbox_rows(db_conn)
                assert row["sent_at"] is None, "left for the relay"
        finally:
            # The listener closes only once the app is down and nothing connects any more:
            # asyncio (3.11) leaks, unclosed, a connection it accepted but had not yet wrapped
            # in a transport when its server closed (`Server._attach` asserts, the error is
            # dropped), and the garbage collector reported it during a later test (seen in CI).
            failing = True
            await asyncio.sleep(0.05)
            server.close()
            await server.wait_closed()
            for transport in accepted:
                transport.close()
            await asyncio.sleep(0)

    async def test_request_succeeds_while_redis_is_down_and_the_relay_delivers_later(
        self,
        make_client: Callable[..., Any],
        db_conn: asyncpg.Connection,
        redis_client: Redis,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        # Nothing listens on this port: every Redis call of this app is refused.
        from tests.integration.jobs.conftest import add_email_routes

        dead = await make_client(
            setup=add_email_routes, redis_url=f"redis://127.0.0.1:{free_port()}/0"
        )

        response = await dead.post("/test/emails", json={"to": "ada@example.org"})

        assert response.status_code == 201
        [outbox_id] = response.json()["outbox_ids"]
        await app_of(dead).state.job_dispatcher.drain()
        [row] = await outbox_rows(db_conn)
        assert str(row["id"]) == outbox_id
        assert row["sent_at"] is None, "left for the relay"
        assert await redis_client.keys("arq:*") == []

        # Redis is back (the worker's own): its start-up relay hands the row over.
        await drain_jobs()
        await drain_jobs()

        [mail] = smtp_sink.messages
        assert mail.message["Message-ID"] == f"<{outbox_id}@example.com>"
        assert mail.links == [LINK]
        [row] = await outbox_rows(db_conn)
        assert row["sent_at"] is not None


async def _insert_rows(conn: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    """Unsent `ping` rows, one second apart, oldest first."""
    ids = [uuid.uuid4() for _ in range(count)]
    for age, outbox_id in zip(range(count, 0, -1), ids, strict=True):
        await conn.execute(
            "INSERT INTO outbox (id, job_name, payload, created_at) "
            "VALUES ($1, 'ping', '{}', now() - make_interval(secs => $2))",
            outbox_id,
            float(age),
        )
    return ids


async def _sent(conn: asyncpg.Connection) -> dict[uuid.UUID, bool]:
    rows = await conn.fetch("SELECT id, sent_at IS NOT NULL AS sent FROM outbox")
    return {row["id"]: row["sent"] for row in rows}


class TestRelay:
    async def test_relay_hands_unsent_rows_oldest_first_and_skips_rows_locked_elsewhere(
        self,
        db_conn: asyncpg.Connection,
        database_url: str,
        factory: async_sessionmaker[AsyncSession],
        arq_redis: ArqRedis,
    ) -> None:
        oldest, locked, newest = await _insert_rows(db_conn, 3)
        from tests.conftest import _dsn

        other = await asyncpg.connect(_dsn(database_url))
        try:
            transaction = other.transaction()
            await transaction.start()
            await other.execute("SELECT 1 FROM outbox WHERE id = $1 FOR UPDATE", locked)

            handed = await relay_outbox(factory, arq_redis, batch_size=1)

            assert handed == 2
            assert await _sent(db_conn) == {oldest: True, locked: False, newest: True}
            assert sorted(await queued_job_ids(arq_redis)) == sorted([str(oldest), str(newest)])
            # One row per transaction (batch_size=1), and now() is the transaction's start.
            marked = await db_conn.fetch(
                "SELECT id FROM outbox WHERE sent_at IS NOT NULL ORDER BY sent_at"
            )
            assert [row["id"] for row in marked] == [oldest, newest]
            await transaction.rollback()
        finally:
            await other.close()

        assert await relay_outbox(factory, arq_redis, batch_size=1) == 1
        assert await _sent(db_conn) == {oldest: True, locked: True, newest: True}
        assert await relay_outbox(factory, arq_redis) == 0

    async def test_relay_leaves_rows_unsent_while_redis_is_down(
        self,
        db_conn: asyncpg.Connection,
        make_settings: Callable[..., Settings],
        factory: async_sessionmaker[AsyncSession],
    ) -> None:
        ids = await _insert_rows(db_conn, 2)
        down = create_redis(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
        try:
            assert await relay_outbox(factory, down) == 0
        finally:
            await down.aclose()
        assert await _sent(db_conn) == dict.fromkeys(ids, False)

    async def test_relay_never_queues_a_job_twice_when_the_mark_was_lost(
        self,
        api: AsyncClient,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
        arq_redis: ArqRedis,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        response = await api.post("/test/emails", json={"to": "ada@example.org"})
        assert response.status_code == 201
        [outbox_id] = response.json()["outbox_ids"]
        await handed_off(db_conn, outbox_id)
        # As if the process died between ARQ's acceptance and the UPDATE that marks the row.
        await db_conn.execute("UPDATE outbox SET sent_at = NULL")

        assert await relay_outbox(factory, arq_redis) == 1

        assert await queued_job_ids(arq_redis) == [outbox_id]
        await drain_jobs()
        assert len(smtp_sink.messages) == 1
        assert await _sent(db_conn) == {uuid.UUID(outbox_id): True}

    async def test_the_relay_cron_job_relays_with_the_worker_context(
        self,
        db_conn: asyncpg.Connection,
        settings: Settings,
        factory: async_sessionmaker[AsyncSession],
        arq_redis: ArqRedis,
    ) -> None:
        ids = await _insert_rows(db_conn, 2)
        ctx = {"settings": settings, "session_factory": factory, "redis": arq_redis}

        assert await relay(ctx) == 2

        assert await _sent(db_conn) == dict.fromkeys(ids, True)
        assert sorted(await queued_job_ids(arq_redis)) == sorted(str(i) for i in ids)

    async def test_jobs_queued_without_a_dispatcher_wait_for_the_worker(
        self,
        db_conn: asyncpg.Connection,
        settings: Settings,
        factory: async_sessionmaker[AsyncSession],
        smtp_sink: SmtpSink,
    ) -> None:
        async with session_scope(factory) as session:
            outbox_id = await queue_email(
                session, to="ada@example.org", template="verify_email", context=verify_context()
            )
        [row] = await outbox_rows(db_conn)
        assert row["sent_at"] is None

        worker = await drain(settings)

        assert worker.jobs_complete == 1
        [mail] = smtp_sink.messages
        assert mail.message["Message-ID"] == f"<{outbox_id}@example.com>"


class TestEnqueueRefusals:
    async def test_a_payload_that_is_not_json_is_refused_and_nothing_is_written(
        self, db_conn: asyncpg.Connection, factory: async_sessionmaker[AsyncSession]
    ) -> None:
        async with session_scope(factory) as session:
            with pytest.raises(TypeError, match="JSON-serialisable"):
                await enqueue(session, "ping", {"when": object()})
        assert await outbox_rows(db_conn) == []

    @pytest.mark.parametrize("key", ["_job_id", "not an identifier"])
    async def test_payload_keys_must_be_public_identifiers(
        self, key: str, db_conn: asyncpg.Connection, factory: async_sessionmaker[AsyncSession]
    ) -> None:
        async with session_scope(factory) as session:
            with pytest.raises(ValueError, match="not a public identifier"):
                await enqueue(session, "ping", {key: 1})
        assert await outbox_rows(db_conn) == []

    async def test_an_unknown_template_fails_the_caller_not_the_worker(
        self, db_conn: asyncpg.Connection, factory: async_sessionmaker[AsyncSession]
    ) -> None:
        async with session_scope(factory) as session:
            with pytest.raises(TemplateNotFound):
                await queue_email(session, to="ada@example.org", template="nope", context={})
        assert await outbox_rows(db_conn) == []

    async def test_a_missing_template_variable_fails_the_caller(
        self, db_conn: asyncpg.Connection, factory: async_sessionmaker[AsyncSession]
    ) -> None:
        async with session_scope(factory) as session:
            with pytest.raises(UndefinedError, match="link"):
                await queue_email(
                    session,
                    to="ada@example.org",
                    template="verify_email",
                    context={"full_name": "Ada", "token": "t"},
                )
        assert await outbox_rows(db_conn) == []

    @pytest.mark.parametrize("address", ["", "no-at-sign", "ada@example.org\r\nBcc: eve@x.org"])
    async def test_a_malformed_recipient_is_refused(
        self,
        address: str,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
    ) -> None:
        async with session_scope(factory) as session:
            with pytest.raises(ValueError, match="not an email address"):
                await queue_email(
                    session, to=address, template="verify_email", context=verify_context()
                )
        assert await outbox_rows(db_conn) == []


class TestPruning:
    async def test_sent_rows_past_retention_are_pruned_and_owed_work_is_kept(
        self,
        db_conn: asyncpg.Connection,
        settings: Settings,
        factory: async_sessionmaker[AsyncSession],
    ) -> None:
        old_sent, recent_sent, old_unsent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await db_conn.execute(
            "INSERT INTO outbox (id, job_name, payload, created_at, sent_at) VALUES "
            "($1, 'ping', '{}', now() - interval '30 days', now() - interval '30 days'),"
            "($2, 'ping', '{}', now() - interval '1 hour', now() - interval '1 hour'),"
            "($3, 'ping', '{}', now() - interval '30 days', NULL)",
            old_sent,
            recent_sent,
            old_unsent,
        )
        await db_conn.execute(
            "INSERT INTO email_deliveries (outbox_id, message_id, recipient, template, status, "
            "created_at, updated_at) VALUES "
            "($1, '<a@x>', 'a@x.org', 'verify_email', 'sent', now() - interval '30 days', "
            "now() - interval '30 days'),"
            "($2, '<b@x>', 'b@x.org', 'verify_email', 'sent', now(), now())",
            old_sent,
            recent_sent,
        )

        pruned = await prune({"settings": settings, "session_factory": factory})

        assert pruned == 2
        assert set(await _sent(db_conn)) == {recent_sent, old_unsent}
        kept = await db_conn.fetch("SELECT outbox_id FROM email_deliveries")
        assert [row["outbox_id"] for row in kept] == [recent_sent]

    async def test_pruning_works_through_a_backlog_in_batches(
        self, db_conn: asyncpg.Connection, factory: async_sessionmaker[AsyncSession]
    ) -> None:
        await db_conn.execute(
            "INSERT INTO outbox (id, job_name, payload, sent_at) "
            "SELECT gen_random_uuid(), 'ping', '{}', now() - interval '2 days' "
            "FROM generate_series(1, 7)"
        )

        assert await prune_outbox(factory, older_than=timedelta(days=1), batch_size=3) == 7

        assert await outbox_rows(db_conn) == []
