"""The users routes: the caller's own account, and the admins' view of every account.

The routes of this tag that end login sessions (`POST /users/me/password`, `DELETE /users/me`,
`PATCH /users/{user_id}`) are auth's (`auth.router.account_router`): auth is built on users.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Response

from app.core.errors import (
    ForbiddenError,
    InsufficientScopeError,
    ServiceUnavailableError,
    UnauthorizedError,
    error_responses,
)
from app.core.reads import ReadConnectionDep
from app.core.routing import make_router
from app.features.users.deps import AdminViewer, CurrentUser, UserServiceDep, Viewer
from app.features.users.errors import UserNotFoundError
from app.features.users.models import Role, User
from app.features.users.queries import UserQueries, UserView, user_json
from app.features.users.schemas import ProfileUpdate, UserOut, UserPage
from app.shared.pagination import PageParamsDep

router = make_router(prefix="/users", tags=["users"])

# An API key on these routes of people: 403 INSUFFICIENT_SCOPE (API.md, Organizations).
AUTH = (UnauthorizedError, InsufficientScopeError, ServiceUnavailableError)
ADMIN = (UnauthorizedError, ForbiddenError, InsufficientScopeError, ServiceUnavailableError)


@router.get("/me", response_model=UserOut, responses=error_responses(*AUTH))
async def read_me(viewer: Viewer) -> Response:
    """The caller's account."""
    return Response(user_json(viewer), media_type="application/json")


@router.patch("/me", response_model=UserOut, responses=error_responses(*AUTH))
async def update_me(body: ProfileUpdate, user: CurrentUser, users: UserServiceDep) -> User:
    """Change the caller's name. `role`, `is_active`, `email`... are unknown fields here (422)."""
    return await users.update_profile(user, full_name=body.full_name)


@router.get("", response_model=UserPage, responses=error_responses(*ADMIN))
async def list_users(
    admin: AdminViewer,
    connection: ReadConnectionDep,
    page: PageParamsDep,
    role: Role | None = None,
    is_active: bool | None = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Case-insensitive part of the email or the name."),
    ] = None,
) -> UserPage:
    """Every account, newest first (admins only)."""
    items, total = await UserQueries(connection).search(
        role=role,
        is_active=is_active,
        q=q.strip() if q else None,
        offset=page.offset,
        limit=page.limit,
    )
    return UserPage(
        items=[UserOut.model_validate(item) for item in items],
        total=total,
        page=page.page,
        page_size=page.page_size,
        has_next=page.offset + len(items) < total,
    )


@router.get(
    "/{user_id}",
    response_model=UserOut,
    responses=error_responses(UserNotFoundError, *ADMIN),
)
async def read_user(
    user_id: uuid.UUID, admin: AdminViewer, connection: ReadConnectionDep
) -> UserView:
    """One account (admins only)."""
    user = await UserQueries(connection).get(user_id)
    if user is None:
        raise UserNotFoundError(user_id)
    return user
