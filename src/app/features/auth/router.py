"""The auth routes: register, log in, refresh, log out, verify the email, reset the password;
and, on the users tag (`account_router`), the routes that change an account's credentials.

Token responses carry `Cache-Control: no-store`; rate limits are per client IP (see
`app.core.ratelimit`), with failed logins also counted per account.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Form, Response, status

from app.core.errors import (
    ForbiddenError,
    InsufficientScopeError,
    ServiceUnavailableError,
    UnauthorizedError,
    error_responses,
)
from app.core.ratelimit import RateLimit, rate_limited_response
from app.core.routing import make_router
from app.features.auth.deps import AuthServiceDep, LoginSessionsDep, response_floor
from app.features.auth.errors import (
    AccountDisabledError,
    InvalidCredentialsError,
    InvalidEmailTokenError,
    InvalidRefreshTokenError,
    WrongPasswordError,
)
from app.features.auth.schemas import (
    EmailIn,
    LoginIn,
    PasswordChangeIn,
    RefreshIn,
    RegisterIn,
    ResetPasswordIn,
    TokenForm,
    TokenIn,
    TokenPair,
    token_pair,
)
from app.features.organizations.deps import OrgServiceDep
from app.features.organizations.errors import LastOwnerError
from app.features.users.deps import AdminUser, CurrentAuth, CurrentUser, UserServiceDep
from app.features.users.errors import EmailTakenError, LastAdminError, UserNotFoundError
from app.features.users.models import User
from app.features.users.schemas import UserOut, UserUpdate

router = make_router(prefix="/auth", tags=["auth"])
# The routes of the users tag that end login sessions (a password change, a deactivation, a role
# change): login sessions are auth's, and the users feature does not import auth. Included right
# after the users router, so that `PATCH /users/me` is matched before `PATCH /users/{user_id}`.
account_router = make_router(prefix="/users", tags=["users"])
# An API key on these routes of people: 403 INSUFFICIENT_SCOPE (API.md, Organizations).
AUTH = (UnauthorizedError, InsufficientScopeError, ServiceUnavailableError)
ADMIN = (UnauthorizedError, ForbiddenError, InsufficientScopeError, ServiceUnavailableError)

LoginLimit = RateLimit("login", "rate_limit_login")  # /login and /token share the bucket
# Known email: ~7 ms here (a token row, an outbox row, the job relay); unknown: ~3 ms. Both
# answer after this floor, far above either.
FORGOT_PASSWORD_FLOOR_SECONDS = 0.2


def _responses(*errors: Any) -> dict[int | str, dict[str, Any]]:
    responses = error_responses(*[error for error in errors if error != 429])
    if 429 in errors:
        responses.update(rate_limited_response())
    return responses


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    dependencies=[RateLimit("register", "rate_limit_register")],
    responses={
        201: {
            "description": "The account, unverified; a verification email is on its way",
            "headers": {
                "Location": {
                    "description": "The account's URL (`/api/v1/users/{user_id}`).",
                    "schema": {"type": "string"},
                }
            },
        },
        **_responses(EmailTakenError, 429, ServiceUnavailableError),
    },
)
async def register(body: RegisterIn, auth: AuthServiceDep, response: Response) -> User:
    """Create an account and email a verification link.

    The password must be 8-128 characters and not one of the most common passwords (422).
    """
    user = await auth.register(email=body.email, password=body.password, full_name=body.full_name)
    response.headers["Location"] = f"/api/v1/users/{user.id}"
    return user


@router.post(
    "/login",
    response_model=TokenPair,
    dependencies=[LoginLimit],
    responses=_responses(
        InvalidCredentialsError, AccountDisabledError, 429, ServiceUnavailableError
    ),
)
async def login(body: LoginIn, auth: AuthServiceDep, response: Response) -> TokenPair:
    """Log in with email and password: starts a session and returns its first token pair.

    An unknown email and a wrong password get the same 401. After too many failed attempts
    for one email (20 an hour by default) every attempt for it gets 429 until the window ends.
    """
    issued = await auth.login(email=body.email, password=body.password)
    return token_pair(issued, response)


@router.post(
    "/token",
    response_model=TokenPair,
    dependencies=[LoginLimit],
    responses=_responses(
        InvalidCredentialsError, AccountDisabledError, 429, ServiceUnavailableError
    ),
)
async def token(
    form: Annotated[TokenForm, Form()],
    auth: AuthServiceDep,
    response: Response,
) -> TokenPair:
    """The OAuth2 password flow (form fields `username` = email and `password`).

    This is what Swagger's Authorize button calls; it shares the login rate limits.
    """
    issued = await auth.login(email=form.username, password=form.password)
    return token_pair(issued, response)


@router.post(
    "/refresh",
    response_model=TokenPair,
    dependencies=[RateLimit("refresh", "rate_limit_refresh")],
    responses=_responses(InvalidRefreshTokenError, 429, ServiceUnavailableError),
)
async def refresh(body: RefreshIn, auth: AuthServiceDep, response: Response) -> TokenPair:
    """Trade a refresh token for a new pair; the presented refresh token stops working.

    **Grace window.** The same refresh token presented again within
    `APP_REFRESH_REUSE_GRACE_SECONDS` (default 5 s) of its rotation gets the pair that rotation
    already issued (the same tokens), as long as that pair's refresh token is unused: two tabs
    refreshing at once both carry on (RFC 9700, section 4.14.2).

    **Reuse detection.** Presented later, or after its successor was rotated in turn, an
    already used refresh token is treated as theft: 401, and every token of that session is
    revoked. The user's other sessions go on. A refresh of a logged-out session is 401, also
    when the logout and the refresh race.
    """
    issued = await auth.refresh(body.refresh_token)
    return token_pair(issued, response)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_responses(UnauthorizedError, InsufficientScopeError, ServiceUnavailableError),
)
async def logout(body: RefreshIn, caller: CurrentAuth, auth: AuthServiceDep) -> None:
    """End this session: its access and refresh tokens stop working at once.

    The session of the bearer token ends, and the refresh token's too if it is another
    session of the same user, including any pair that a refresh racing this logout hands out.
    Other sessions go on.
    """
    await auth.logout(caller.user, access=caller.claims, refresh_token=body.refresh_token)


@router.post(
    "/verify-email",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_responses(InvalidEmailTokenError),
)
async def verify_email(body: TokenIn, auth: AuthServiceDep) -> None:
    """Confirm the email address with the token of the emailed link.

    The same token again, once it worked, is still 204.
    """
    await auth.verify_email(body.token)


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    dependencies=[RateLimit("verify-resend", "rate_limit_verify_resend")],
    responses=_responses(UnauthorizedError, InsufficientScopeError, 429, ServiceUnavailableError),
)
async def resend_verification(user: CurrentUser, auth: AuthServiceDep) -> None:
    """Email a new verification link (nothing is sent when the email is already verified)."""
    await auth.resend_verification(user)


@router.post(
    "/forgot-password",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    dependencies=[
        response_floor(FORGOT_PASSWORD_FLOOR_SECONDS),
        RateLimit("forgot-password", "rate_limit_forgot_password"),
    ],
    responses=_responses(429, ServiceUnavailableError),
)
async def forgot_password(body: EmailIn, auth: AuthServiceDep) -> None:
    """Email a password reset link, if an active account has this email.

    The answer is the same whether or not it has.
    """
    await auth.forgot_password(body.email)


@router.post(
    "/reset-password",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_responses(InvalidEmailTokenError),
)
async def reset_password(body: ResetPasswordIn, auth: AuthServiceDep) -> None:
    """Set a new password with the token of the emailed link (single use, expires in 1 h).

    Every session of the account ends.
    """
    await auth.reset_password(token=body.token, new_password=body.new_password)


@account_router.post(
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


@account_router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(LastAdminError, LastOwnerError, *AUTH),
)
async def deactivate_me(
    user: CurrentUser, users: UserServiceDep, orgs: OrgServiceDep, logins: LoginSessionsDep
) -> None:
    """Deactivate the caller's account and revoke all its tokens; orders are kept.

    The last active admin gets 409 LAST_ADMIN; the last active owner of an organization that
    has other members 409 LAST_OWNER.
    """
    await orgs.check_account_can_close(user)
    await users.deactivate(user, logins=logins)


@account_router.patch(
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
    logins: LoginSessionsDep,
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
        user, full_name=body.full_name, role=body.role, is_active=body.is_active, logins=logins
    )
