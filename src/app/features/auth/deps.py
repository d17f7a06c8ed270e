"""Dependencies of the auth routes: the service, the login sessions, and a response floor.

The dependencies that authenticate a caller (`CurrentUser`, `Viewer`, `AdminUser`...) are not
here but in `app.features.users.deps`: every feature uses them, users included, and auth is
built on users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request

from app.core.database import SessionDep, session_factory_from
from app.core.ratelimit import get_rate_limiter
from app.core.redis import RedisDep
from app.core.security import PasswordsDep, TokensDep
from app.features.auth.service import AuthService, LoginSessions


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


async def get_login_sessions(session: SessionDep) -> LoginSessions:
    return LoginSessions(session)


LoginSessionsDep = Annotated[LoginSessions, Depends(get_login_sessions)]


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
