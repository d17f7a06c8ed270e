"""Who is calling: the one place that turns a bearer token into an active user, and the users
service.

Every feature authenticates its callers with these dependencies, so they live with the accounts
they load, at the bottom of the features: auth (logins, sessions, tokens) is built on users,
never the other way round. They need nothing of auth but what `core.security` holds (the JWTs
and the key of the login-session denylist), and nothing of organizations but a gate for API
keys, which the app installs (`app.state.api_key_gate`, see `ApiKeyGate`).

`get_current_user` runs on every authenticated request, so it stays cheap: an `async def` (a
sync dependency costs a thread-pool hop), one Redis round trip for the session denylist and one
primary-key read of the user (which also answers "is the account active" and "is the token
still of the current version"). Write routes get the account tracked by their session
(`CurrentUser`); read routes get a frozen view of it from the read side (`Viewer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, Protocol

from arq.connections import ArqRedis
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from app.core.database import SessionDep
from app.core.errors import ForbiddenError, ServiceUnavailableError, UnauthorizedError
from app.core.reads import ReadConnection, ReadConnectionDep
from app.core.security import (
    InvalidTokenError,
    TokenClaims,
    Tokens,
    is_api_key,
    revoked_session_key,
)
from app.features.users.models import Role, User
from app.features.users.queries import UserQueries, UserView
from app.features.users.service import UserService

# Swagger's Authorize button posts the OAuth2 password form here.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
BearerToken = Annotated[str | None, Depends(oauth2_scheme)]


class ApiKeyGate(Protocol):
    """What answers an organization's API key sent to a route of people (API.md: a key never
    reaches one): 401 for a key that is not live, 403 INSUFFICIENT_SCOPE for a live one.

    Keys belong to organizations, which are built on users; the app assembly sets
    `app.state.api_key_gate` to theirs, so that this module does not import them.
    """

    async def __call__(self, connection: HTTPConnection, key: str) -> NoReturn: ...


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The caller and the claims of the access token it presented (its login session, `sid`)."""

    user: User
    claims: TokenClaims


async def _claims(request: Request, token: str | None) -> TokenClaims:
    """The claims of a valid access token whose login session has not ended."""
    if token and is_api_key(token):
        gate: ApiKeyGate = request.app.state.api_key_gate
        await gate(request, token)
    # Tokens and Redis straight from the app's state, not as dependencies of their own: this
    # runs on every authenticated request, and each FastAPI dependency costs about 10 us.
    return await _claims_of(request.app.state, token)


async def _claims_of(state: Any, token: str | None) -> TokenClaims:
    if not token:
        raise UnauthorizedError("Missing bearer token")
    tokens: Tokens = state.tokens
    redis: ArqRedis = state.redis
    try:
        claims = tokens.decode(token, "access")
    except InvalidTokenError:
        raise UnauthorizedError("Invalid or expired token") from None
    try:
        revoked = await redis.exists(revoked_session_key(claims.session_id))
    except (RedisError, OSError):
        raise ServiceUnavailableError("Cannot check the token right now") from None
    if revoked:
        raise UnauthorizedError("This session has ended")
    return claims


def _check_account(user: User | UserView | None, claims: TokenClaims) -> None:
    if user is None or not user.is_active or user.token_version != claims.version:
        raise UnauthorizedError("Invalid or expired token")


async def _authenticate(
    request: Request, token: str | None, session: AsyncSession
) -> Authenticated:
    claims = await _claims(request, token)
    user = await UserService(session).get(claims.subject)
    _check_account(user, claims)
    assert user is not None
    return Authenticated(user, claims)


async def get_current_user(request: Request, token: BearerToken, session: SessionDep) -> User:
    """The caller of a write route: its account, tracked by the request's session."""
    return (await _authenticate(request, token, session)).user


async def get_current_auth(
    request: Request, token: BearerToken, session: SessionDep
) -> Authenticated:
    """Like `get_current_user`, with the token's claims (for routes that act on the login
    session)."""
    return await _authenticate(request, token, session)


async def get_viewer(
    request: Request, token: BearerToken, connection: ReadConnectionDep
) -> UserView:
    """The caller of a read route: a frozen view of its account, from the read side."""
    claims = await _claims(request, token)
    viewer = await UserQueries(connection).get(claims.subject)
    _check_account(viewer, claims)
    assert viewer is not None
    return viewer


async def authenticate_viewer(
    state: Any, token: str | None, connection: ReadConnection
) -> tuple[UserView, TokenClaims]:
    """The viewer behind an access token and its claims, for a connection that is not a
    request (the event streams' WebSocket authenticates with its first message): the same
    checks as every request's."""
    claims = await _claims_of(state, token)
    viewer = await UserQueries(connection).get(claims.subject)
    _check_account(viewer, claims)
    assert viewer is not None
    return viewer, claims


async def get_optional_viewer(
    request: Request, token: BearerToken, connection: ReadConnectionDep
) -> UserView | None:
    """The caller when a valid token is sent; anonymous (None) otherwise, never an error.

    An API key is served as an anonymous caller (API.md: the public catalog)."""
    if not token or is_api_key(token):
        return None
    try:
        return await get_viewer(request, token, connection)
    except (UnauthorizedError, ServiceUnavailableError):
        return None


CurrentUser = Annotated[User, Depends(get_current_user)]
CurrentAuth = Annotated[Authenticated, Depends(get_current_auth)]
Viewer = Annotated[UserView, Depends(get_viewer)]
OptionalViewer = Annotated[UserView | None, Depends(get_optional_viewer)]


def is_admin(user: User | UserView | None) -> bool:
    return user is not None and user.role == Role.admin


def require_role(*roles: Role) -> Callable[[User], Awaitable[User]]:
    """A dependency of write routes that lets through only users of one of `roles` (403)."""

    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise ForbiddenError("Your role does not allow this")
        return user

    return check


def require_viewer_role(*roles: Role) -> Callable[[UserView], Awaitable[UserView]]:
    """`require_role` for read routes: the caller as a view, 403 for other roles."""

    async def check(viewer: Viewer) -> UserView:
        if viewer.role not in roles:
            raise ForbiddenError("Your role does not allow this")
        return viewer

    return check


AdminUser = Annotated[User, Depends(require_role(Role.admin))]
AdminViewer = Annotated[UserView, Depends(require_viewer_role(Role.admin))]


async def get_user_service(session: SessionDep) -> UserService:
    return UserService(session)


UserServiceDep = Annotated[UserService, Depends(get_user_service)]
