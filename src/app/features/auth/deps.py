"""Who is calling: the one place that turns a bearer token into an active user.

`get_current_user` runs on every authenticated request, so it stays cheap: an `async def` (a
sync dependency costs a thread-pool hop), one Redis round trip for the session denylist and one
primary-key read of the user (which also answers "is the account active" and "is the token
still of the current version").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from arq.connections import ArqRedis
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import SessionDep, reads_only, session_factory_from
from app.core.errors import ForbiddenError, ServiceUnavailableError, UnauthorizedError
from app.core.ratelimit import get_rate_limiter
from app.core.redis import RedisDep
from app.core.security import InvalidTokenError, PasswordsDep, TokenClaims, Tokens, TokensDep
from app.features.auth.service import AuthService
from app.features.auth.sessions import REVOKED_SESSION_KEY, revoked_session_key
from app.features.users.models import Role, User
from app.features.users.service import UserService

__all__ = [
    "REVOKED_SESSION_KEY",
    "AdminUser",
    "AuthServiceDep",
    "CurrentAuth",
    "CurrentUser",
    "OptionalUser",
    "get_current_user",
    "require_role",
    "revoked_session_key",
]

# Swagger's Authorize button posts the OAuth2 password form here.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
BearerToken = Annotated[str | None, Depends(oauth2_scheme)]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The caller and the claims of the access token it presented (its session, `sid`)."""

    user: User
    claims: TokenClaims


async def _authenticate(
    request: Request, token: str | None, session: AsyncSession
) -> Authenticated:
    # Tokens and Redis straight from the app's state, not as dependencies of their own: this
    # runs on every authenticated request, and each FastAPI dependency costs about 10 us.
    return await authenticate(request.app.state, token, session, untracked=reads_only(request))


async def authenticate(
    state: Any, token: str | None, session: AsyncSession, *, untracked: bool
) -> Authenticated:
    """The active user behind an access token and its claims, from the app's state (also for
    connections that are not requests: the event stream's WebSocket). `untracked` for callers
    that only read the account."""
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
    # A read-only request gets the account as a plain object, read more cheaply; any other
    # gets it tracked by the session, since it may change it.
    user = await UserService(session).get(claims.subject, untracked=untracked)
    if user is None or not user.is_active or user.token_version != claims.version:
        raise UnauthorizedError("Invalid or expired token")
    return Authenticated(user, claims)


async def get_current_user(request: Request, token: BearerToken, session: SessionDep) -> User:
    return (await _authenticate(request, token, session)).user


async def get_current_auth(
    request: Request, token: BearerToken, session: SessionDep
) -> Authenticated:
    """Like `get_current_user`, with the token's claims (for routes that act on the session)."""
    return await _authenticate(request, token, session)


async def get_optional_user(
    request: Request, token: BearerToken, session: SessionDep
) -> User | None:
    """The caller when a valid token is sent; anonymous (None) otherwise, never an error."""
    if not token:
        return None
    try:
        return (await _authenticate(request, token, session)).user
    except (UnauthorizedError, ServiceUnavailableError):
        return None


CurrentUser = Annotated[User, Depends(get_current_user)]
CurrentAuth = Annotated[Authenticated, Depends(get_current_auth)]
OptionalUser = Annotated[User | None, Depends(get_optional_user)]


def require_role(*roles: Role) -> Callable[[User], Awaitable[User]]:
    """A dependency that lets through only users of one of `roles` (403 for the others)."""

    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise ForbiddenError("Your role does not allow this")
        return user

    return check


AdminUser = Annotated[User, Depends(require_role(Role.admin))]


async def get_auth_service(
    request: Request,
    session: SessionDep,
    passwords: PasswordsDep,
    tokens: TokensDep,
    redis: RedisDep,
) -> AuthService:
    return AuthService(
        session,
        settings=request.app.state.settings,
        passwords=passwords,
        tokens=tokens,
        redis=redis,
        limiter=get_rate_limiter(request),
        session_factory=session_factory_from(request),
    )


AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]


def response_floor(seconds: float) -> Any:
    """A route dependency that makes a successful answer take at least `seconds`.

    Listed first among a route's dependencies, it is entered first and left last: after the
    session's commit and its after-commit work (the job relay), so the whole difference between
    two branches of a route is covered. Used where timing must not tell whether an account
    exists (forgot-password: a known email writes a token and queues a mail, an unknown one
    does not). Errors are not delayed.
    """

    async def floor() -> AsyncIterator[None]:
        started = time.perf_counter()
        yield
        remaining = seconds - (time.perf_counter() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)

    return Depends(floor, scope="function")
