"""The email job sends each message once, retries what may pass and gives up on what will not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from arq.connections import ArqRedis
from arq.worker import Retry
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.email import deliver
from app.dev import SmtpSink, free_port
from app.worker import drain
from tests.integration.jobs.conftest import (
    delivery,
    handed_off,
    queued_job_ids,
    verify_context,
)

SettingsFactory = Callable[..., Settings]


async def _queue_one(api: AsyncClient, db_conn: asyncpg.Connection) -> str:
    response = await api.post("/test/emails", json={"to": "ada@example.org"})
    assert response.status_code == 201
    outbox_id: str = response.json()["outbox_ids"][0]
    await handed_off(db_conn, outbox_id)
    return outbox_id


class TestRedelivery:
    async def test_a_job_delivered_again_sends_no_second_email(
        self,
        api: AsyncClient,
        settings: Settings,
        db_conn: asyncpg.Connection,
        redis_client: Redis,
        arq_redis: ArqRedis,
        smtp_sink: SmtpSink,
    ) -> None:
        outbox_id = await _queue_one(api, db_conn)
        first = await drain(settings)
        assert (first.jobs_complete, len(smtp_sink.messages)) == (1, 1)

        # A re-delivery as ARQ makes after a lost acknowledgement: the same job id again.
        await redis_client.delete(f"arq:result:{outbox_id}")
        job = await arq_redis.enqueue_job("send_email", _job_id=outbox_id)
        assert job is not None
        second = await drain(settings)

        assert second.jobs_complete == 1
        assert await job.result(timeout=5) == "sent"
        assert len(smtp_sink.messages) == 1
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert (record["status"], record["attempts"]) == ("sent", 1)

    async def test_two_concurrent_runs_of_one_job_send_one_email(
        self,
        settings: Settings,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
        smtp_sink: SmtpSink,
    ) -> None:
        outbox_id = uuid.uuid4()

        async def run() -> str:
            return await deliver(
                factory,
                settings,
                outbox_id=outbox_id,
                job_try=1,
                to="ada@example.org",
                template="verify_email",
                context=verify_context(),
            )

        # The second run finds the delivery sent, or claimed by the first (it is then retried
        # by ARQ once the claim lapses, and finds it sent).
        outcomes = await asyncio.gather(run(), run(), return_exceptions=True)
        assert "sent" in outcomes
        assert all(outcome == "sent" or isinstance(outcome, Retry) for outcome in outcomes)
        assert await run() == "sent"

        assert len(smtp_sink.messages) == 1
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert (record["status"], record["attempts"]) == ("sent", 1)

    async def test_the_arq_fast_path_ignores_a_second_hand_off_of_the_same_row(
        self,
        api: AsyncClient,
        db_conn: asyncpg.Connection,
        arq_redis: ArqRedis,
    ) -> None:
        outbox_id = await _queue_one(api, db_conn)

        again = await arq_redis.enqueue_job("send_email", _job_id=outbox_id)

        assert again is None
        assert await queued_job_ids(arq_redis) == [outbox_id]

    async def test_a_job_whose_outbox_row_is_gone_does_nothing(
        self, settings: Settings, arq_redis: ArqRedis, smtp_sink: SmtpSink
    ) -> None:
        pruned = await arq_redis.enqueue_job("send_email", _job_id=str(uuid.uuid4()))
        foreign = await arq_redis.enqueue_job("send_email", _job_id="not-an-outbox-id")
        assert pruned is not None
        assert foreign is not None

        worker = await drain(settings)

        assert (worker.jobs_complete, worker.jobs_failed) == (2, 0)
        assert await pruned.result(timeout=5) is None
        assert await foreign.result(timeout=5) is None
        assert smtp_sink.messages == []


class TestNoLockDuringSmtp:
    async def test_the_delivery_row_is_claimed_not_locked_while_smtp_talks(
        self,
        make_settings: SettingsFactory,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
    ) -> None:
        """A server that accepts and never greets: the send hangs until the SMTP timeout. The
        delivery row must be free (claimed with a lease) the whole time."""
        accepted: list[asyncio.StreamWriter] = []

        async def never_greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        silent = await asyncio.start_server(never_greet, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        settings = make_settings(smtp_port=port, smtp_timeout_seconds=1.5)
        outbox_id = uuid.uuid4()
        sending = asyncio.create_task(
            deliver(
                factory,
                settings,
                outbox_id=outbox_id,
                job_try=1,
                to="ada@example.org",
                template="verify_email",
                context=verify_context(),
            )
        )
        try:
            for _ in range(50):
                await asyncio.sleep(0.05)
                if await delivery(db_conn, outbox_id) is not None:
                    break
            await asyncio.sleep(0.2)  # well inside the SMTP exchange
            assert not sending.done()
            async with db_conn.transaction():
                locked = await db_conn.fetchrow(
                    "SELECT status, claimed_until > now() AS claimed FROM email_deliveries "
                    "WHERE outbox_id = $1 FOR UPDATE NOWAIT",
                    outbox_id,
                )
            assert locked is not None
            assert (locked["status"], locked["claimed"]) == ("pending", True)
            with pytest.raises(Retry):
                await sending
        finally:
            for writer in accepted:
                writer.close()
                await writer.wait_closed()
            silent.close()
            await silent.wait_closed()
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert (record["status"], record["attempts"], record["claimed_until"]) == (
            "pending",
            1,
            None,
        )


class TestTransientFailures:
    async def test_a_server_that_fails_twice_then_accepts_gets_the_message_on_the_third_try(
        self,
        api: AsyncClient,
        make_settings: SettingsFactory,
        db_conn: asyncpg.Connection,
        smtp_sink: SmtpSink,
    ) -> None:
        outbox_id = await _queue_one(api, db_conn)
        smtp_sink.fail_next("451 4.3.0 Try again later", "451 4.3.0 Try again later")

        worker = await drain(make_settings(email_retry_backoff_seconds=0.05))

        assert (worker.jobs_retried, worker.jobs_complete, worker.jobs_failed) == (2, 1, 0)
        [mail] = smtp_sink.messages
        assert mail.message["Message-ID"] == f"<{outbox_id}@example.com>"
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert (record["status"], record["attempts"], record["last_error"]) == ("sent", 3, None)

    async def test_transient_failures_stop_at_the_deadline(
        self,
        api: AsyncClient,
        make_settings: SettingsFactory,
        db_conn: asyncpg.Connection,
        smtp_sink: SmtpSink,
    ) -> None:
        outbox_id = await _queue_one(api, db_conn)
        smtp_sink.fail_next(*["451 4.3.0 Try again later"] * 500)
        # A deadline of about half a second (in hours), retries every 50 ms at most.
        settings = make_settings(
            email_retry_backoff_seconds=0.05,
            email_retry_max_backoff_seconds=0.05,
            email_retry_deadline_hours=0.5 / 3600,
        )

        worker = await drain(settings)

        assert worker.jobs_complete == 1
        assert worker.jobs_retried >= 2
        assert smtp_sink.messages == []
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert record["status"] == "failed"
        assert record["attempts"] == worker.jobs_retried + 1
        assert "451" in record["last_error"]
        # Nothing is left to retry.
        assert (await drain(settings)).jobs_complete == 0

    async def test_an_unreachable_server_is_retried_then_given_up_at_the_deadline(
        self,
        api: AsyncClient,
        make_settings: SettingsFactory,
        db_conn: asyncpg.Connection,
        smtp_sink: SmtpSink,
    ) -> None:
        outbox_id = await _queue_one(api, db_conn)
        settings = make_settings(
            smtp_port=free_port(),
            email_retry_backoff_seconds=0.05,
            email_retry_deadline_hours=0.3 / 3600,
        )

        worker = await drain(settings)

        assert worker.jobs_complete == 1
        assert worker.jobs_retried >= 1
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert record["status"] == "failed"
        assert record["attempts"] == worker.jobs_retried + 1
        assert "SMTPConnect" in record["last_error"]
        assert smtp_sink.messages == []


class TestPermanentFailures:
    async def test_a_permanent_rejection_is_marked_failed_and_never_retried(
        self,
        api: AsyncClient,
        settings: Settings,
        db_conn: asyncpg.Connection,
        smtp_sink: SmtpSink,
    ) -> None:
        outbox_id = await _queue_one(api, db_conn)
        smtp_sink.fail_next("550 5.1.1 Mailbox unavailable")

        worker = await drain(settings)

        assert (worker.jobs_retried, worker.jobs_complete, worker.jobs_failed) == (0, 1, 0)
        assert smtp_sink.messages == []
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert (record["status"], record["attempts"]) == ("failed", 1)
        assert "550" in record["last_error"]
        assert record["sent_at"] is None

    async def test_a_failed_delivery_is_not_attempted_again_on_redelivery(
        self,
        settings: Settings,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
        smtp_sink: SmtpSink,
    ) -> None:
        outbox_id = uuid.uuid4()
        smtp_sink.fail_next("554 5.7.1 Rejected")
        arguments = {
            "outbox_id": outbox_id,
            "job_try": 1,
            "to": "ada@example.org",
            "template": "verify_email",
            "context": verify_context(),
        }

        assert await deliver(factory, settings, **arguments) == "failed"
        assert await deliver(factory, settings, **arguments) == "failed"

        assert smtp_sink.messages == []
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert record["attempts"] == 1

    async def test_a_template_that_no_longer_renders_fails_without_retrying(
        self,
        settings: Settings,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
        smtp_sink: SmtpSink,
    ) -> None:
        outbox_id = uuid.uuid4()

        status = await deliver(
            factory,
            settings,
            outbox_id=outbox_id,
            job_try=1,
            to="ada@example.org",
            template="verify_email",
            context={"full_name": "Ada"},
        )

        assert status == "failed"
        assert smtp_sink.messages == []
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert "UndefinedError" in record["last_error"]
