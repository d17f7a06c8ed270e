"""The cursor codec: opaque, bound to its list, filters and caller, keyed from the JWT secret."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from app.features.orders.cursor import order_key, order_scope, parse_order_key
from app.shared.cursor import Cursors, CursorScope, InvalidCursorError

SECRET = "unit-test-secret-" + "s" * 40
SCOPE = CursorScope(list="products", caller="anonymous", filters={"q": "mug", "x": None})


def test_a_cursor_round_trips_its_key() -> None:
    cursors = Cursors(SECRET)
    token = cursors.encode(SCOPE, ["Mug", "0190f1c2-0000-7000-8000-000000000000"])
    assert cursors.decode(SCOPE, token) == ["Mug", "0190f1c2-0000-7000-8000-000000000000"]
    assert SECRET not in token
    assert "mug" not in token  # the filters are bound, not carried


def test_filters_are_compared_whatever_their_order() -> None:
    cursors = Cursors(SECRET)
    token = cursors.encode(SCOPE, [1])
    same = CursorScope(list="products", caller="anonymous", filters={"x": None, "q": "mug"})
    assert cursors.decode(same, token) == [1]


@pytest.mark.parametrize(
    "other",
    [
        CursorScope(list="orders", caller="anonymous", filters={"q": "mug", "x": None}),
        CursorScope(list="products", caller="someone", filters={"q": "mug", "x": None}),
        CursorScope(list="products", caller="anonymous", filters={"q": "cup", "x": None}),
        CursorScope(list="products", caller="anonymous", filters={"q": "mug"}),
    ],
)
def test_another_list_caller_or_filter_is_refused(other: CursorScope) -> None:
    cursors = Cursors(SECRET)
    with pytest.raises(InvalidCursorError):
        cursors.decode(other, cursors.encode(SCOPE, ["Mug", "x"]))


def test_an_edited_key_or_another_secret_is_refused() -> None:
    token = Cursors(SECRET).encode(SCOPE, ["Mug", "a"])
    body, mac = token.split(".")
    edited = base64.urlsafe_b64encode(json.dumps(["Aaa", "a"]).encode()).decode().rstrip("=")
    for bad in (f"{edited}.{mac}", f"{body}.", "", "...", f"{body}.{mac}x", "é.é"):
        with pytest.raises(InvalidCursorError):
            Cursors(SECRET).decode(SCOPE, bad)
    with pytest.raises(InvalidCursorError):
        Cursors("another-secret-" + "t" * 40).decode(SCOPE, token)


def test_order_keys_keep_microseconds_and_the_offset() -> None:
    created = datetime(2026, 12, 6, 23, 59, 59, 123456, tzinfo=UTC)
    order_id = uuid.uuid4()
    assert parse_order_key(order_key(created, order_id)) == (created, order_id)
    assert order_scope(order_id, status=None, user_id=None).filters == {
        "status": None,
        "user_id": None,
    }
