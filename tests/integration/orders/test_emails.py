"""Order emails go through the outbox and the worker: confirmed, shipped, cancelled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from httpx import AsyncClient

from app.dev import SmtpSink
from app.features.users.models import Role
from tests.integration.catalog import ORDERS, Login, ProductFactory, order_url, place_order

DrainJobs = Callable[[], Awaitable[None]]


class TestOrderEmails:
    async def test_a_new_order_is_confirmed_with_its_lines_and_total(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        user, headers = await login()
        mug = await make_product(sku="MUG-1", name="Coffee mug", price_cents=1250)
        tea = await make_product(sku="TEA-1", name="Green tea", price_cents=300)
        body = {
            "items": [
                {"product_id": str(mug.id), "quantity": 2},
                {"product_id": str(tea.id), "quantity": 1},
            ]
        }
        order_id = (await place_order(client, headers, body=body))["id"]
        await drain_jobs()
        assert len(smtp_sink.messages) == 1
        mail = smtp_sink.messages[0]
        assert mail.recipients == [user.email]
        assert mail.subject == f"Order {order_id[:8]} confirmed"
        for part in (mail.text, mail.html):
            assert "Coffee mug" in part
            assert "MUG-1" in part
            assert "Green tea" in part
            assert "12.50" in part
            assert "25.00" in part
            assert "28.00" in part  # the total

    async def test_shipping_and_cancelling_notify_the_owner_and_other_changes_do_not(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        owner, headers = await login()
        _, admin = await login(role=Role.admin)
        product = await make_product(stock=10)
        body = {"items": [{"product_id": str(product.id), "quantity": 1}]}
        shipped_id = (await place_order(client, headers, body=body))["id"]
        cancelled_id = (await place_order(client, headers, body=body))["id"]
        await drain_jobs()
        smtp_sink.clear()
        for status in ("paid", "shipped", "delivered"):
            response = await client.patch(
                f"{order_url(shipped_id)}/status", json={"status": status}, headers=admin
            )
            assert response.status_code == 200
        await client.patch(
            f"{order_url(cancelled_id)}/status", json={"status": "paid"}, headers=admin
        )
        assert (await client.post(f"{order_url(cancelled_id)}/cancel", headers=admin)).is_success
        await drain_jobs()
        subjects = sorted(mail.subject for mail in smtp_sink.messages)
        assert subjects == sorted(
            [f"Order {shipped_id[:8]} shipped", f"Order {cancelled_id[:8]} cancelled"]
        )
        assert all(mail.recipients == [owner.email] for mail in smtp_sink.messages)

    async def test_the_owner_cancelling_is_notified_too(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        owner, headers = await login()
        product = await make_product(name="Teapot")
        order_id = (await place_order(client, headers, product.id))["id"]
        assert (await client.post(f"{order_url(order_id)}/cancel", headers=headers)).is_success
        await drain_jobs()
        cancelled = [m for m in smtp_sink.messages if m.subject.endswith("cancelled")]
        assert [m.subject for m in cancelled] == [f"Order {order_id[:8]} cancelled"]
        assert cancelled[0].recipients == [owner.email]
        assert "Teapot" in cancelled[0].text

    async def test_a_refused_or_replayed_order_sends_nothing_more(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        smtp_sink: SmtpSink,
        drain_jobs: DrainJobs,
    ) -> None:
        _, headers = await login()
        product = await make_product(stock=1)
        keyed = {**headers, "Idempotency-Key": "mail-once"}
        body = {"items": [{"product_id": str(product.id), "quantity": 1}]}
        assert (await client.post(ORDERS, json=body, headers=keyed)).status_code == 201
        replay = await client.post(ORDERS, json=body, headers=keyed)
        assert replay.headers["idempotent-replayed"] == "true"
        refused = await client.post(ORDERS, json=body, headers=headers)
        assert refused.status_code == 409
        await drain_jobs()
        assert [mail.subject.endswith("confirmed") for mail in smtp_sink.messages] == [True]
