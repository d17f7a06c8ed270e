"""Rendering and failure classification of email, without any server."""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
import pytest
from jinja2 import TemplateNotFound

from app.config import load_settings
from app.core.email import (
    TEMPLATES_DIR,
    backoff_seconds,
    build_message,
    is_transient,
    message_id_for,
    render_email,
)

ORDER = {
    "id": "01938a2b-1111-7222-8333-444455556666",
    "id8": "01938a2b",
    "items": [
        {
            "name": "Mug <large>",
            "sku": "MUG-L",
            "quantity": 2,
            "unit_price_cents": 1250,
            "line_total_cents": 2500,
        },
        {
            "name": "Desk",
            "sku": "DESK-1",
            "quantity": 1,
            "unit_price_cents": 123456,
            "line_total_cents": 123456,
        },
    ],
    "total_cents": 125956,
    "currency": "EUR",
    "status": "pending",
}
TOKEN_CONTEXT = {"full_name": "A", "token": "t", "link": "https://app.test/x?token=t"}


def _render(template: str, context: dict[str, object]) -> tuple[str, str, str]:
    rendered = render_email(template, context, frontend_url="https://app.test/", currency="USD")
    return rendered.subject, rendered.text, rendered.html


class TestTemplates:
    @pytest.mark.parametrize(
        ("template", "context", "subject"),
        [
            ("verify_email", TOKEN_CONTEXT, "Verify your email"),
            ("reset_password", TOKEN_CONTEXT, "Reset your password"),
            ("password_changed", {"full_name": "A"}, "Your password was changed"),
            ("order_confirmed", {"order": ORDER}, "Order 01938a2b confirmed"),
            ("order_shipped", {"order": ORDER}, "Order 01938a2b shipped"),
            ("order_cancelled", {"order": ORDER}, "Order 01938a2b cancelled"),
        ],
    )
    def test_every_feature_email_has_the_subject_api_md_names(
        self, template: str, context: dict[str, object], subject: str
    ) -> None:
        rendered_subject, text, html = _render(template, context)
        assert rendered_subject == subject
        assert text.strip()
        assert html.lstrip().startswith("<!doctype html>")

    def test_order_lines_and_total_are_in_both_parts_and_html_is_escaped(self) -> None:
        _, text, html = _render("order_confirmed", {"order": ORDER})
        assert "- Mug <large> (MUG-L): 2 x 12.50 EUR = 25.00 EUR" in text
        assert "- Desk (DESK-1): 1 x 1,234.56 EUR = 1,234.56 EUR" in text
        assert "Total: 1,259.56 EUR" in text
        assert "https://app.test/orders/01938a2b-1111-7222-8333-444455556666" in text
        assert "Mug &lt;large&gt;" in html
        assert "<large>" not in html
        assert "1,259.56 EUR" in html

    def test_money_uses_the_context_currency_and_handles_negatives(self, tmp_path: Path) -> None:
        (tmp_path / "m.subject.txt").write_text("{{ 5 | money }} {{ -123456 | money('JPY') }}")
        (tmp_path / "m.txt").write_text("{{ 0 | money }}")
        (tmp_path / "m.html").write_text("")
        rendered = render_email(
            "m", {}, frontend_url="https://x", currency="GBP", directory=tmp_path
        )
        assert rendered.subject == "0.05 GBP -1,234.56 JPY"
        assert rendered.text == "0.00 GBP"

    def test_a_subject_is_always_one_line(self, tmp_path: Path) -> None:
        (tmp_path / "s.subject.txt").write_text("Hello\n  {{ name }}\n")
        (tmp_path / "s.txt").write_text("")
        (tmp_path / "s.html").write_text("")
        rendered = render_email(
            "s", {"name": "Bob"}, frontend_url="https://x", currency="USD", directory=tmp_path
        )
        assert rendered.subject == "Hello Bob"

    def test_an_unknown_template_is_an_error(self) -> None:
        with pytest.raises(TemplateNotFound):
            _render("no_such_template", {})

    def test_templates_live_in_the_package(self) -> None:
        assert (TEMPLATES_DIR / "verify_email.subject.txt").is_file()


class TestMessage:
    def test_the_message_id_is_derived_from_the_outbox_id_and_sender_domain(self) -> None:
        import uuid

        outbox_id = uuid.UUID("01938a2b-1111-7222-8333-444455556666")
        assert message_id_for(outbox_id, "Shop <mail@shop.test>") == f"<{outbox_id}@shop.test>"
        assert message_id_for(outbox_id, "nobody") == f"<{outbox_id}@localhost>"

    def test_the_message_is_multipart_text_and_html(self) -> None:
        rendered = render_email(
            "password_changed", {"full_name": "A"}, frontend_url="https://x", currency="USD"
        )
        message = build_message(rendered, to="a@x.test", sender="s@x.test", message_id="<1@x>")
        assert message.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in message.iter_parts()] == [
            "text/plain",
            "text/html",
        ]
        assert message["Message-ID"] == "<1@x>"
        assert message["Date"]


class TestFailureClassification:
    @pytest.mark.parametrize(
        "exc",
        [
            aiosmtplib.SMTPDataError(451, "try later"),
            aiosmtplib.SMTPSenderRefused(421, "busy", "s@x.test"),
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(450, "mailbox busy", "a@x.test")]
            ),
            aiosmtplib.SMTPConnectError("refused"),
            aiosmtplib.SMTPServerDisconnected("gone"),
            aiosmtplib.SMTPReadTimeoutError("slow"),
            ConnectionResetError(),
            TimeoutError(),
        ],
    )
    def test_4xx_replies_and_connection_problems_are_transient(self, exc: Exception) -> None:
        assert is_transient(exc)

    @pytest.mark.parametrize(
        "exc",
        [
            aiosmtplib.SMTPDataError(550, "no such user"),
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(550, "unknown", "a@x.test")]
            ),
            ValueError("a bug"),
        ],
    )
    def test_5xx_replies_and_bugs_are_permanent(self, exc: Exception) -> None:
        assert not is_transient(exc)

    def test_backoff_doubles_and_is_capped_at_half_an_hour(self) -> None:
        settings = load_settings(
            database_url="postgresql+asyncpg://x/y",
            redis_url="redis://x",
            jwt_secret="s" * 40,
            email_retry_backoff_seconds=10,
        )
        assert [backoff_seconds(settings, n) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
        assert backoff_seconds(settings, 30) == 1800.0  # APP_EMAIL_RETRY_MAX_BACKOFF_SECONDS


def test_a_zero_backoff_still_gives_a_finite_schedule() -> None:
    from app.core.email import MAX_SCHEDULED_TRIES, retry_schedule

    settings = load_settings(
        database_url="postgresql+asyncpg://x/y",
        redis_url="redis://x",
        jwt_secret="s" * 40,
        email_retry_backoff_seconds=0,
    )
    assert retry_schedule(settings) == [0.0] * MAX_SCHEDULED_TRIES
