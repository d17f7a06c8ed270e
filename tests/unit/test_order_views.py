"""The read side's order views serialise to exactly the bytes of the wire schemas.

The routes send `order_json(view)` / `page_json(view)` while OpenAPI documents `OrderOut` and
`OrderPage`: a field added to one and not the other, or a different order or format, fails
here.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.features.orders.models import OrderStatus
from app.features.orders.queries import LineView, OrderPageView, OrderView, order_json, page_json
from app.features.orders.schemas import OrderLineOut, OrderOut, OrderPage


def _view(note: str | None, tz: timezone = UTC) -> OrderView:
    created = datetime(2026, 12, 6, 23, 5, 7, 123456, tzinfo=tz)
    return OrderView(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        organization_id=uuid.uuid4(),
        status=OrderStatus.paid,
        items=(
            LineView(uuid.uuid4(), "SKU-1", "Crème brûlée ☕", 1250, 2, 2500),
            LineView(uuid.uuid4(), "SKU-2", 'Quote " and \\ slash', 1, 1000, 1000),
        ),
        total_cents=3500,
        currency="EUR",
        note=note,
        created_at=created,
        updated_at=created + timedelta(seconds=1),
    )


def _out(view: OrderView) -> OrderOut:
    fields = {field.name: getattr(view, field.name) for field in dataclasses.fields(view)}
    fields["items"] = [OrderLineOut(**dataclasses.asdict(line)) for line in view.items]
    return OrderOut(**fields)


@pytest.mark.parametrize("note", [None, "leave at the door", ""])
def test_an_order_view_is_the_bytes_of_order_out(note: str | None) -> None:
    view = _view(note)
    assert order_json(view) == _out(view).model_dump_json().encode()


def test_a_time_zone_other_than_utc_is_kept_as_order_out_keeps_it() -> None:
    view = _view("x", timezone(timedelta(hours=2)))
    assert order_json(view) == _out(view).model_dump_json().encode()


def test_a_page_view_is_the_bytes_of_order_page() -> None:
    views = (_view(None), _view("b"))
    page = OrderPageView(items=views, total=7, page=2, page_size=2, has_next=True)
    expected = OrderPage(
        items=[_out(view) for view in views], total=7, page=2, page_size=2, has_next=True
    )
    assert page_json(page) == expected.model_dump_json().encode()
    empty = OrderPageView(items=(), total=0, page=1, page_size=20, has_next=False)
    assert page_json(empty) == b'{"items":[],"total":0,"page":1,"page_size":20,"has_next":false}'


def test_the_views_have_the_fields_of_the_schemas_in_their_order() -> None:
    assert [f.name for f in dataclasses.fields(OrderView)] == list(OrderOut.model_fields)
    assert [f.name for f in dataclasses.fields(LineView)] == list(OrderLineOut.model_fields)
    assert [f.name for f in dataclasses.fields(OrderPageView)] == list(OrderPage.model_fields)


def test_views_are_frozen() -> None:
    view = _view(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.note = "changed"  # type: ignore[misc]
