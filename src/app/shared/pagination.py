"""Pagination of list routes: `?page=1&page_size=20` in, `Page[ItemOut]` out (API.md, Pagination).

Each list declares its own named page, `class ProductPage(Page[ProductOut])`, so that OpenAPI has
one readable component per list (`ProductPage`, not `Page_ProductOut_`) for generated clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, Self, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

ItemT = TypeVar("ItemT")

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


class Page(BaseModel, Generic[ItemT]):
    """One page of a list, newest first unless the route says otherwise."""

    items: list[ItemT]
    total: int = Field(ge=0, description="Items matching the query, over all pages.")
    page: int = Field(ge=1)
    page_size: int = Field(ge=1, le=MAX_PAGE_SIZE)
    has_next: bool

    @classmethod
    def of(cls, items: Sequence[ItemT], *, total: int, params: PageParams) -> Self:
        return cls(
            items=list(items),
            total=total,
            page=params.page,
            page_size=params.page_size,
            has_next=params.offset + len(items) < total,
        )


@dataclass(frozen=True, slots=True)
class PageParams:
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    @property
    def limit(self) -> int:
        return self.page_size


async def page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number.")] = 1,
    page_size: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (1-100).")
    ] = DEFAULT_PAGE_SIZE,
) -> PageParams:
    """Page and size from the query; outside the bounds FastAPI answers 422."""
    return PageParams(page=page, page_size=page_size)


PageParamsDep = Annotated[PageParams, Depends(page_params)]
