"""Pages: named components, `has_next` and offsets."""

from __future__ import annotations

from pydantic import BaseModel

from app.shared.pagination import Page, PageParams


class ThingOut(BaseModel):
    name: str


class ThingPage(Page[ThingOut]):
    pass


def test_offset_and_limit_follow_page_and_size() -> None:
    assert (PageParams(page=3, page_size=20).offset, PageParams(3, 20).limit) == (40, 20)
    assert PageParams().offset == 0


def test_has_next_is_true_only_when_items_remain() -> None:
    params = PageParams(page=2, page_size=2)
    things = [ThingOut(name="a"), ThingOut(name="b")]
    assert ThingPage.of(things, total=5, params=params).has_next is True
    assert ThingPage.of(things, total=4, params=params).has_next is False
    assert ThingPage.of([], total=1, params=PageParams(page=9)).has_next is False


def test_a_page_is_its_own_named_schema() -> None:
    page = ThingPage.of([ThingOut(name="a")], total=1, params=PageParams())
    assert isinstance(page, ThingPage)
    assert page.model_dump() == {
        "items": [{"name": "a"}],
        "total": 1,
        "page": 1,
        "page_size": 20,
        "has_next": False,
    }
    assert ThingPage.model_json_schema()["title"] == "ThingPage"
