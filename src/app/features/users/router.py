"""The users routes: the caller's own account, and the admins' view of every account."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Response, status

from app.core.errors import (
    ForbiddenError,
    ServiceUnavailableError,
    UnauthorizedError,
    error_responses,
)
from app.core.ratelimit import rate_limited_response
from app.core.reads import ReadConnectionDep
from app.core.routing import make_router
from app.features.auth.deps import AdminUser, AdminViewer, AuthServiceDep, CurrentUser, Viewer
from app.features.auth.errors import WrongPasswordError
from app.features.auth.schemas import PasswordChangeIn, TokenPair, token_pair
from app.features.organizations.deps import OrgServiceDep
from app.features.organizations.errors import LastOwnerError
from app.features.users.deps import UserServiceDep
from app.features.users.errors import LastAdminError, UserNotFoundError
from app.features.users.models import Role, User
from app.features.users.queries import UserQueries, UserView
from app.features.users.schemas import ProfileUpdate, UserOut, UserPage, UserUpdate
from app.shared.pagination import PageParamsDep

router = make_router(prefix="/users", tags=["users"])

AUTH = (UnauthorizedError, ServiceUnavailableError)
ADMIN = (UnauthorizedError, ForbiddenError, ServiceUnavailableError)


@router.get("/me", response_model=UserOut, responses=error_responses(*AUTH))
async def read_me(viewer: Viewer) -> UserView:
    """The caller's account."""
    return viewer


@router.patch("/me", response_model=UserOut, responses=error_responses(*AUTH))
async def update_me(body: ProfileUpdate, user: CurrentUser, users: UserServiceDep) -> User:
    """Change the caller's name. `role`, `is_active`, `email`... are unknown fields here (422)."""
    return await users.update_profile(user, full_name=body.full_name)


@router.post(
    "/me/password",
    response_model=TokenPair,
    responses={**error_responses(WrongPasswordError, *AUTH), **rate_limited_response()},
)
async def change_password(
    body: PasswordChangeIn, user: CurrentUser, auth: AuthServiceDep, response: Response
) -> TokenPair:
    """Change the password. Every earlier token of the account stops working, in every
    session, and reset links sent before stop working; this client carries on with the new
    pair returned here.

    A wrong `current_password` counts as a failed login of the account (the same per-account
    bucket as `/auth/login`); past that limit this route answers 429 with `Retry-After`.
    """
    issued = await auth.change_password(
        user, current_password=body.current_password, new_password=body.new_password
    )
    return token_pair(issued, response)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(LastAdminError, LastOwnerError, *AUTH),
)
async def deactivate_me(user: CurrentUser, users: UserServiceDep, orgs: OrgServiceDep) -> None:
    """Deactivate the caller's account and revoke all its tokens; orders are kept.

    The last active admin gets 409 LAST_ADMIN; the last active owner of an organization that
    has other members 409 LAST_OWNER.
    """
    await orgs.check_account_can_close(user)
    await users.deactivate(user)


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


@router.patch(
    "/{user_id}",
    response_model=UserOut,
    responses=error_responses(UserNotFoundError, LastAdminError, LastOwnerError, *ADMIN),
)
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    admin: AdminUser,
    users: UserServiceDep,
    orgs: OrgServiceDep,
) -> User:
    """Change an account's name, role or activity (admins only).

    A role change or a deactivation makes every earlier token of that account fail at once.
    Demoting or deactivating the last active admin is 409 LAST_ADMIN; deactivating the last
    active owner of an organization that has other members is 409 LAST_OWNER.
    """
    user = await users.require(user_id)
    if body.is_active is False and user.is_active:
        await orgs.check_account_can_close(user)
    return await users.update(
        user, full_name=body.full_name, role=body.role, is_active=body.is_active
    )
