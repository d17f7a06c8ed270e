"""Who is calling: the one place that turns a bearer token into an active user.

`get_current_user` runs on every authenticated request, so it stays cheap: an `async def` (a
sync dependency costs a thread-pool hop), one Redis round trip for the session denylist and one
primary-key read of the user (which also answers "is the account active" and "is the token
still of the current version").
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer
from redis.exceptions import RedisError

from app.core.database import SessionDep
from app.core.errors import ForbiddenError, ServiceUnavailableError, UnauthorizedError
from app.core.redis import RedisDep
from app.core.security import InvalidTokenError, TokensDep
from app.features.users.models import Role, User
from app.features.users.service import UserService

# Swagger's Authorize button posts the OAuth2 password form here.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
BearerToken = Annotated[str | None, Depends(oauth2_scheme)]

# A logged-out (or stolen-and-revoked) session's id is kept here until its last access token
# could have expired; the refresh tokens of the session are revoked in PostgreSQL.
REVOKED_SESSION_KEY = "auth:revoked-session:{session_id}"


def revoked_session_key(session_id: uuid.UUID) -> str:
    return REVOKED_SESSION_KEY.format(session_id=session_id)


async def get_current_user(
    token: BearerToken, tokens: TokensDep, redis: RedisDep, session: SessionDep
) -> User:
    if not token:
        raise UnauthorizedError("Missing bearer token")
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
    user = await UserService(session).get(claims.subject)
    if user is None or not user.is_active or user.token_version != claims.version:
        raise UnauthorizedError("Invalid or expired token")
    return user


async def get_optional_user(
    token: BearerToken, tokens: TokensDep, redis: RedisDep, session: SessionDep
) -> User | None:
    """The caller when a valid token is sent; anonymous (None) otherwise, never an error."""
    if not token:
        return None
    try:
        return await get_current_user(token, tokens, redis, session)
    except (UnauthorizedError, ServiceUnavailableError):
        return None


CurrentUser = Annotated[User, Depends(get_current_user)]
OptionalUser = Annotated[User | None, Depends(get_optional_user)]


def require_role(*roles: Role) -> Callable[[User], Awaitable[User]]:
    """A dependency that lets through only users of one of `roles` (403 for the others)."""

    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise ForbiddenError("Your role does not allow this")
        return user

    return check


AdminUser = Annotated[User, Depends(require_role(Role.admin))]
