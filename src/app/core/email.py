"""Email: Jinja2 templates rendered as multipart text + HTML, sent over SMTP by the worker.

Requests never talk to SMTP: `queue_email()` puts a `send_email` job in the outbox (see
`app.core.jobs`), so mail goes out only for committed work and survives Redis or SMTP outages.

The job is idempotent. Its outbox id names the message (`Message-ID: <outbox-id@sender-domain>`)
and keys a row in `email_deliveries`. A run claims that row in a short transaction (a lease,
`claimed_until`), talks to SMTP with no transaction open and no row locked, then records the
outcome in a second short transaction. A re-delivered run finds the row `sent` (or `failed`) and
sends nothing; a concurrent one finds it claimed and retries after the lease. The templates are
rendered once per delivery, in the worker; `queue_email` only checks that they exist and that
the context has every variable they use. Jinja2 is imported by the functions that use it, not
at the top: the API imports this module for `queue_email`, and should load Jinja2 at its first
queued email rather than at start-up (`tests/unit/test_imports.py`).

Transient SMTP failures (4xx replies, connection errors, timeouts) are retried through ARQ's
`Retry` with exponential backoff (`APP_EMAIL_RETRY_BACKOFF_SECONDS`, doubling, capped at
`APP_EMAIL_RETRY_MAX_BACKOFF_SECONDS`) until `APP_EMAIL_RETRY_DEADLINE_HOURS` after the first
attempt (48 h by default), so a relay outage of a day or more loses no mail; the last retry
falls on the deadline itself. Only a permanent refusal (5xx) or a template that does not render
ends it early. Each failed attempt is logged and counted (`email_delivery_failures_total`).

Links that act as credentials (verification, reset) wait in the outbox sealed
(`queue_email(secret_context=...)`, see `app.core.security.Sealer`), opened at send time only.

The one window left is a crash between the SMTP server's "250" and our
commit: the message is then sent again on retry, with the same Message-ID, which receivers use to
drop duplicates.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arq.worker import Retry
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from structlog.contextvars import bound_contextvars

from app.config import Settings
from app.core import metrics, outbox, tracing
from app.core.database import session_scope, utcnow
from app.core.email_deliveries import DeliveryStatus, EmailDelivery
from app.core.logging import get_logger
from app.core.metrics import EMAIL_FAILURES
from app.core.security import InvalidTokenError, Sealer, sealer_for

if TYPE_CHECKING:
    from jinja2 import Environment
    from jinja2.runtime import Context

log = get_logger(__name__)

SEND_EMAIL_JOB = "send_email"
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates" / "email"
# Every template's context has these (added by `render_email`).
_ALWAYS_DEFINED = frozenset({"frontend_url", "currency"})
# An SMTP exchange is a handful of steps, each bounded by the SMTP timeout: a claim outlives it.
_SMTP_STEPS = 8


def money(context: Context, cents: int, currency: str | None = None) -> str:
    """`{{ 123456 | money }}` -> `1,234.56 USD` (the context's currency unless one is given)."""
    code = currency or context.get("currency") or ""
    whole, fraction = divmod(abs(int(cents)), 100)
    sign = "-" if int(cents) < 0 else ""
    return f"{sign}{whole:,}.{fraction:02d} {code}".rstrip()


@cache
def _environment(directory: Path) -> Environment:
    from jinja2 import (
        Environment,
        FileSystemLoader,
        StrictUndefined,
        pass_context,
        select_autoescape,
    )

    env = Environment(
        loader=FileSystemLoader(directory),
        # HTML parts escape every value; subjects and text parts are plain text.
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # `money` reads the template's currency: Jinja2 passes it the context.
    env.filters["money"] = pass_context(money)
    return env


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def render_email(
    template: str,
    context: dict[str, Any],
    *,
    frontend_url: str,
    currency: str,
    directory: Path = TEMPLATES_DIR,
) -> RenderedEmail:
    """Render `<template>.subject.txt`, `<template>.txt` and `<template>.html`.

    `frontend_url` (without a trailing slash) and `currency` are in every template's context;
    an undefined variable is an error, never an empty string in a customer's inbox.
    """
    env = _environment(directory)
    values = {"frontend_url": frontend_url.rstrip("/"), "currency": currency, **context}
    subject = env.get_template(f"{template}.subject.txt").render(values)
    return RenderedEmail(
        subject=" ".join(subject.split()),
        text=env.get_template(f"{template}.txt").render(values),
        html=env.get_template(f"{template}.html").render(values),
    )


@cache
def _variables(template: str, directory: Path = TEMPLATES_DIR) -> frozenset[str]:
    """The top-level variables the three parts of `template` use (parsed once, not rendered).

    Raises `TemplateNotFound` for a template that does not exist.
    """
    from jinja2 import meta

    env = _environment(directory)
    names: set[str] = set()
    for part in (f"{template}.subject.txt", f"{template}.txt", f"{template}.html"):
        source, _, _ = env.loader.get_source(env, part)  # type: ignore[union-attr]
        names |= meta.find_undeclared_variables(env.parse(source))
    return frozenset(names)


def check_template(template: str, context: dict[str, Any]) -> None:
    """That `template` exists and `context` defines every variable it uses, without rendering
    it: a bug fails the request that asked for the mail (and its tests), not the worker later."""
    missing = sorted(_variables(template) - _ALWAYS_DEFINED - context.keys())
    if missing:
        from jinja2 import UndefinedError

        raise UndefinedError(f"{template}: {', '.join(repr(name) for name in missing)} undefined")


def message_id_for(outbox_id: uuid.UUID, sender: str) -> str:
    _, at, domain = parseaddr(sender)[1].rpartition("@")
    return f"<{outbox_id}@{domain if at and domain else 'localhost'}>"


def build_message(
    rendered: RenderedEmail, *, to: str, sender: str, message_id: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


async def queue_email(
    session: AsyncSession,
    *,
    to: str,
    template: str,
    context: dict[str, Any],
    secret_context: dict[str, str] | None = None,
    sealer: Sealer | None = None,
) -> uuid.UUID:
    """Queue one email (through the outbox).

    `template` names files under src/app/templates/email/: <template>.subject.txt (one line,
    Jinja2), <template>.txt, <template>.html. `context` must be JSON-serialisable;
    `frontend_url` and `currency` are added by the renderer.

    `secret_context` holds what acts as a credential (a verification or reset link): it is
    stored sealed by `sealer` (`app.core.security.Sealer`, a key derived from `APP_JWT_SECRET`)
    and opened by the worker at send time only, so the outbox never holds it in the clear.

    A missing template or variable fails here (`check_template`); the worker renders it.
    """
    address = to.strip()
    if not address or "@" not in address or any(c in address for c in "\r\n"):
        raise ValueError("not an email address")
    check_template(template, {**context, **(secret_context or {})})
    payload: dict[str, Any] = {"to": address, "template": template, "context": context}
    if secret_context:
        if sealer is None:
            raise ValueError("a secret context needs a sealer")
        payload["sealed"] = sealer.seal(secret_context)
    return await outbox.enqueue(session, SEND_EMAIL_JOB, payload)


async def send_message(settings: Settings, message: EmailMessage) -> None:
    """Send over SMTP with the `APP_SMTP_*` settings (STARTTLS and login when configured)."""
    import aiosmtplib  # the worker's, not the API's: kept out of the API workers' memory

    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    # The whole conversation (connect, STARTTLS, login, MAIL/RCPT/DATA) as one span.
    with tracing.span(
        "smtp send",
        **{
            "server.address": settings.smtp_host,
            "server.port": settings.smtp_port,
            "smtp.starttls": settings.smtp_starttls,
        },
    ):
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password if settings.smtp_username else None,
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )


def is_transient(exc: BaseException) -> bool:
    """Whether an SMTP failure may pass on its own: a 4xx reply, a dropped or refused connection."""
    import aiosmtplib

    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return any(400 <= refused.code < 500 for refused in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 400 <= exc.code < 500
    return isinstance(exc, aiosmtplib.SMTPException | OSError | asyncio.TimeoutError)


def backoff_seconds(settings: Settings, job_try: int) -> float:
    """Exponential: base, 2 x base, 4 x base, ... capped at `email_retry_max_backoff_seconds`."""
    exponent = min(job_try - 1, 60)  # 2**60 x base is past any cap; no float overflow
    return float(
        min(
            settings.email_retry_backoff_seconds * 2**exponent,
            settings.email_retry_max_backoff_seconds,
        )
    )


def retry_delay(settings: Settings, job_try: int, elapsed_seconds: float) -> float | None:
    """How long to wait before the next try after try `job_try` failed `elapsed_seconds` after
    the first; None once the deadline has passed (the email has failed)."""
    remaining = settings.email_retry_deadline_hours * 3600 - elapsed_seconds
    if remaining <= 0:
        return None
    return min(backoff_seconds(settings, job_try), remaining)


# With a zero backoff (allowed, tests retry at once) no wait ever reaches the deadline: bound the
# schedule so that computing it always ends.
MAX_SCHEDULED_TRIES = 1000


def retry_schedule(settings: Settings) -> list[float]:
    """The waits between tries of an email whose every try fails at once: the whole policy,
    computable without waiting (the last wait ends on the deadline, or at most
    `MAX_SCHEDULED_TRIES` waits)."""
    delays: list[float] = []
    elapsed = 0.0
    while (
        len(delays) < MAX_SCHEDULED_TRIES
        and (delay := retry_delay(settings, len(delays) + 1, elapsed)) is not None
    ):
        delays.append(delay)
        elapsed += delay
    return delays


def email_max_tries(settings: Settings) -> int:
    """ARQ's bound on tries of the email job: above what the deadline allows (the deadline
    decides), with room for tries spent on database outages (`app.worker.survives_outages`)."""
    return len(retry_schedule(settings)) + 1 + 50


def _failed_attempt(reason: str) -> None:
    EMAIL_FAILURES.labels(reason=reason).inc()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


async def _claim(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    outbox_id: uuid.UUID,
    message_id: str,
    to: str,
    template: str,
) -> str | float | datetime:
    """Claim the delivery for one send: the time of its first try when claimed; the status
    when it is already done; the seconds until another run's claim lapses when one is sending
    it now."""
    now = utcnow()
    async with session_scope(factory) as session:
        await session.execute(
            insert(EmailDelivery)
            .values(
                outbox_id=outbox_id,
                message_id=message_id,
                recipient=to,
                template=template,
                status=DeliveryStatus.pending,
            )
            .on_conflict_do_nothing(index_elements=["outbox_id"])
        )
        # Locked only for this short transaction: two runs of the job claim one after the other.
        delivery = (
            await session.execute(
                select(EmailDelivery)
                .where(col(EmailDelivery.outbox_id) == outbox_id)
                .with_for_update()
            )
        ).scalar_one()
        if delivery.status != DeliveryStatus.pending:
            return str(delivery.status)
        if delivery.claimed_until is not None and delivery.claimed_until > now:
            return (delivery.claimed_until - now).total_seconds()
        delivery.attempts += 1
        delivery.claimed_until = now + timedelta(
            seconds=settings.smtp_timeout_seconds * _SMTP_STEPS
        )
        first_try: datetime = delivery.created_at
    return first_try


async def _record(
    factory: async_sessionmaker[AsyncSession],
    outbox_id: uuid.UUID,
    *,
    status: DeliveryStatus,
    error: str | None,
    sealed: bool = False,
) -> None:
    """The outcome of a send, and the claim released; once done, the payload's context (which
    may hold a token) is scrubbed from the outbox row, which keeps `to` and `template`."""
    async with session_scope(factory) as session:
        delivery = (
            await session.execute(
                select(EmailDelivery)
                .where(col(EmailDelivery.outbox_id) == outbox_id)
                .with_for_update()
            )
        ).scalar_one()
        delivery.status = status
        delivery.last_error = error
        delivery.claimed_until = None
        if status == DeliveryStatus.sent:
            delivery.sent_at = utcnow()
        if status != DeliveryStatus.pending:
            await outbox.scrub(session, outbox_id, "context")
            if sealed:
                await outbox.scrub(session, outbox_id, "sealed")


async def deliver(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    outbox_id: uuid.UUID,
    job_try: int,
    to: str,
    template: str,
    context: dict[str, Any],
    sealed: str | None = None,
) -> str:
    """Send the email of one outbox row at most once; returns the delivery's status.

    Raises `Retry` after a transient failure until the deadline, and while another run holds
    the claim.
    """
    from jinja2 import TemplateError

    message_id = message_id_for(outbox_id, settings.mail_from)
    claim = await _claim(
        factory, settings, outbox_id=outbox_id, message_id=message_id, to=to, template=template
    )
    if isinstance(claim, str):
        log.info("email.skipped", status=claim, message_id=message_id)
        metrics.email_delivery("skipped")
        return claim
    if isinstance(claim, float):
        log.info("email.claimed_elsewhere", retry_in_s=claim, message_id=message_id)
        raise Retry(defer=claim)
    first_try = claim
    # No transaction is open and no row is locked from here to `_record`.
    status, error, retry_in = DeliveryStatus.sent, None, None
    try:
        values = dict(context)
        if isinstance(sealed, str):
            values.update(sealer_for(settings).unseal(sealed))
        rendered = render_email(
            template, values, frontend_url=settings.frontend_url, currency=settings.currency
        )
        await send_message(
            settings,
            build_message(rendered, to=to, sender=settings.mail_from, message_id=message_id),
        )
    except TemplateError as exc:
        status, error = DeliveryStatus.failed, _describe(exc)
        _failed_attempt("template")
        log.error("email.failed", reason="template", error=error)
    except InvalidTokenError:
        # Sealed with another APP_JWT_SECRET (rotated since): its link could not work now.
        status = DeliveryStatus.failed
        error = "the sealed context cannot be opened with this APP_JWT_SECRET"
        _failed_attempt("sealed")
        log.error("email.failed", reason="sealed")
    except Exception as exc:
        error = _describe(exc)
        elapsed = (utcnow() - first_try).total_seconds()
        if not is_transient(exc):
            status = DeliveryStatus.failed
            _failed_attempt("permanent")
            log.error("email.failed", reason="permanent", error=error)
        elif (retry_in := retry_delay(settings, job_try, elapsed)) is None:
            status = DeliveryStatus.failed
            _failed_attempt("deadline")
            log.error(
                "email.failed",
                reason="deadline",
                tries=job_try,
                elapsed_s=round(elapsed),
                error=error,
            )
        else:
            status = DeliveryStatus.pending
            _failed_attempt("transient")
            metrics.email_delivery("retried")
            log.warning("email.deferred", retry_in_s=retry_in, tries=job_try, error=error)
    else:
        log.info("email.sent", message_id=message_id, attempts=job_try)
    await _record(factory, outbox_id, status=status, error=error, sealed=sealed is not None)
    if retry_in is not None:
        raise Retry(defer=retry_in)
    metrics.email_delivery(str(status))
    return str(status)


async def send_email(
    ctx: dict[str, Any],
    *,
    to: str,
    template: str,
    context: dict[str, Any],
    sealed: str | None = None,
) -> str:
    """The ARQ job of `queue_email`: its job id is the outbox id."""
    job_id = str(ctx["job_id"])
    job_try = int(ctx.get("job_try", 1))
    with bound_contextvars(job_id=job_id, outbox_id=job_id, job_try=job_try, template=template):
        return await deliver(
            ctx["session_factory"],
            ctx["settings"],
            outbox_id=uuid.UUID(job_id),
            job_try=job_try,
            to=to,
            template=template,
            context=context,
            sealed=sealed,
        )


async def prune_deliveries(
    factory: async_sessionmaker[AsyncSession], *, older_than: timedelta
) -> int:
    """Forget delivery records untouched for `older_than` (the outbox's retention)."""
    cutoff = utcnow() - older_than
    async with session_scope(factory) as session:
        result = await session.execute(
            delete(EmailDelivery).where(col(EmailDelivery.updated_at) < cutoff)
        )
    deleted: int = getattr(result, "rowcount", 0) or 0
    if deleted:
        log.info("email.deliveries_pruned", count=deleted)
    return deleted
