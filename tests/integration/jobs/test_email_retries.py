"""An SMTP relay outage of a day or more loses no mail (issue 12): capped exponential backoff
until a deadline, each failed attempt logged and counted; only a 5xx refusal ends it early.

The schedule is computed, not waited for; the retry path runs the job's function against a real
SMTP sink that is down, then up again, with the delivery's first try moved into the past."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import pytest
from arq.worker import Retry
from httpx import AsyncClient
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.email import deliver, retry_delay, retry_schedule
from app.core.logging import configure_logging
from app.dev import SmtpSink, free_port
from app.worker import drain
from tests.integration.jobs.conftest import delivery, verify_context

SettingsFactory = Callable[..., Settings]
HOUR = 3600.0


def failures(reason: str) -> float:
    value = REGISTRY.get_sample_value("email_delivery_failures_total", {"reason": reason})
    return value or 0.0


class TestSchedule:
    def test_the_default_policy_rides_out_a_day_long_outage(self, settings: Settings) -> None:
        schedule = retry_schedule(settings)
        assert schedule[:5] == [10, 20, 40, 80, 160]
        assert max(schedule) == 1800  # capped at 30 minutes
        assert all(0 < delay <= 1800 for delay in schedule)
        assert sum(schedule) == pytest.approx(48 * HOUR)  # retried until the deadline
        # Tries keep coming through the whole first day, never more than 30 min apart.
        starts = [sum(schedule[:n]) for n in range(len(schedule) + 1)]
        assert next(start for start in starts if start >= 24 * HOUR) < 24.5 * HOUR
        assert len(schedule) > 90

    def test_the_wait_is_cut_to_the_deadline_and_none_after_it(self, settings: Settings) -> None:
        assert retry_delay(settings, 1, 0) == 10
        assert retry_delay(settings, 30, 10 * HOUR) == 1800
        assert retry_delay(settings, 30, 48 * HOUR - 60) == 60
        assert retry_delay(settings, 30, 48 * HOUR) is None
        assert retry_delay(settings, 10_000, HOUR) == 1800  # no overflow however many tries

    def test_the_deadline_is_a_setting(self, make_settings: SettingsFactory) -> None:
        settings = make_settings(email_retry_deadline_hours=24, email_retry_max_backoff_seconds=600)
        schedule = retry_schedule(settings)
        assert max(schedule) == 600
        assert sum(schedule) == pytest.approx(24 * HOUR)


class TestRelayOutage:
    async def test_an_email_survives_a_day_of_refused_connections_then_goes_out(
        self,
        settings: Settings,
        make_settings: SettingsFactory,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
    ) -> None:
        sink = SmtpSink(port=free_port())  # not started yet: the relay is down
        down = make_settings(smtp_port=sink.port)
        outbox_id = uuid.uuid4()
        arguments = {
            "outbox_id": outbox_id,
            "to": "ada@example.org",
            "template": "verify_email",
            "context": verify_context(),
        }
        transient_before = failures("transient")
        with pytest.raises(Retry) as first:
            await deliver(factory, down, job_try=1, **arguments)
        assert first.value.defer_score == 10_000
        # The first try was 20 hours ago; the 40th try fails too: still retried, 30 min on.
        await db_conn.execute(
            "UPDATE email_deliveries SET created_at = created_at - interval '20 hours' "
            "WHERE outbox_id = $1",
            outbox_id,
        )
        with pytest.raises(Retry) as later:
            await deliver(factory, down, job_try=40, **arguments)
        assert later.value.defer_score == 1_800_000
        assert failures("transient") == transient_before + 2
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert (record["status"], record["attempts"]) == ("pending", 2)
        assert "SMTPConnect" in record["last_error"]

        sink.start()  # the relay is back
        try:
            assert await deliver(factory, down, job_try=41, **arguments) == "sent"
            [mail] = sink.wait_for(1)
            assert mail.message["Message-ID"] == f"<{outbox_id}@example.com>"
        finally:
            sink.stop()
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert (record["status"], record["attempts"], record["last_error"]) == ("sent", 3, None)

    async def test_past_the_deadline_the_email_fails_and_is_counted(
        self,
        make_settings: SettingsFactory,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
    ) -> None:
        down = make_settings(smtp_port=free_port())
        outbox_id = uuid.uuid4()
        arguments = {
            "outbox_id": outbox_id,
            "to": "ada@example.org",
            "template": "verify_email",
            "context": verify_context(),
        }
        with pytest.raises(Retry):
            await deliver(factory, down, job_try=1, **arguments)
        await db_conn.execute(
            "UPDATE email_deliveries SET created_at = now() - interval '48 hours 1 second' "
            "WHERE outbox_id = $1",
            outbox_id,
        )
        deadline_before = failures("deadline")
        assert await deliver(factory, down, job_try=2, **arguments) == "failed"
        assert failures("deadline") == deadline_before + 1
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert record["status"] == "failed"

    async def test_a_permanent_refusal_ends_it_at_once_and_is_counted(
        self,
        settings: Settings,
        smtp_sink: SmtpSink,
        db_conn: asyncpg.Connection,
        factory: async_sessionmaker[AsyncSession],
    ) -> None:
        smtp_sink.fail_next("550 5.1.1 Mailbox unavailable")
        before = failures("permanent")
        outbox_id = uuid.uuid4()
        status = await deliver(
            factory,
            settings,
            outbox_id=outbox_id,
            job_try=1,
            to="ada@example.org",
            template="verify_email",
            context=verify_context(),
        )
        assert status == "failed"
        assert failures("permanent") == before + 1


class TestThroughTheWorker:
    async def test_more_transient_failures_than_the_old_five_tries_still_deliver(
        self,
        api: AsyncClient,
        make_settings: SettingsFactory,
        db_conn: asyncpg.Connection,
        smtp_sink: SmtpSink,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        response = await api.post("/test/emails", json={"to": "ada@example.org"})
        outbox_id = response.json()["outbox_ids"][0]
        smtp_sink.fail_next(*["451 4.3.0 Try again later"] * 7)
        configure_logging("INFO", json=True)  # as `saas worker` does, onto the captured stderr
        capfd.readouterr()

        worker = await drain(make_settings(email_retry_backoff_seconds=0.01))

        assert (worker.jobs_retried, worker.jobs_complete, worker.jobs_failed) == (7, 1, 0)
        [mail] = smtp_sink.messages
        assert mail.message["Message-ID"] == f"<{outbox_id}@example.com>"
        record = await delivery(db_conn, outbox_id)
        assert record is not None
        assert (record["status"], record["attempts"]) == ("sent", 8)
        output = capfd.readouterr()
        deferred = [
            line for line in (output.err + output.out).splitlines() if "email.deferred" in line
        ]
        assert len(deferred) == 7  # one line per failed attempt
        assert "Traceback" not in output.err + output.out
