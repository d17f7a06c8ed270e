"""Whether the login sessions behind long-lived connections still hold, checked for many at
once.

A request is authenticated once (`users.deps`); a connection that stays open (the event
streams) must stop when its login session ends. This applies the same rules to a whole
process's connections in two round trips: the login-session denylist in Redis (logout, theft,
`core.security.revoked_session_key`) and the accounts
in PostgreSQL (deactivation, and the token version that a password change, reset or role change
bumps).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.reads import ReadConnection
from app.core.security import revoked_session_key
from app.features.users.models import Role
from app.features.users.queries import UserQueries


@dataclass(frozen=True, slots=True)
class LoginSessionRef:
    session_id: uuid.UUID
    user_id: uuid.UUID
    token_version: int


@dataclass(frozen=True, slots=True)
class Liveness:
    ended: frozenset[uuid.UUID]  # login session ids whose tokens no longer hold
    roles: dict[uuid.UUID, Role]  # the current role of each user whose sessions hold


async def check_login_sessions(
    redis: Redis, connection: ReadConnection, refs: Sequence[LoginSessionRef]
) -> Liveness:
    """Which of these login sessions have ended; raises on a Redis or database outage."""
    if not refs:
        return Liveness(frozenset(), {})
    session_ids = list(dict.fromkeys(ref.session_id for ref in refs))
    async with redis.pipeline(transaction=False) as pipe:
        for session_id in session_ids:
            pipe.exists(revoked_session_key(session_id))
        revoked = {sid for sid, hit in zip(session_ids, await pipe.execute(), strict=True) if hit}
    states = await UserQueries(connection).token_states(list({ref.user_id for ref in refs}))
    ended = set(revoked)
    roles: dict[uuid.UUID, Role] = {}
    for ref in refs:
        state = states.get(ref.user_id)
        if state is None or not state.is_active or state.token_version != ref.token_version:
            ended.add(ref.session_id)
        else:
            roles[ref.user_id] = state.role
    return Liveness(frozenset(ended), roles)
