"""Whether the login sessions behind long-lived connections still hold, checked for many at
once.

A request is authenticated once (`users.deps`); a connection that stays open (the event
streams) must stop when its login session ends. This applies the same rules to a whole
process's connections in two round trips: the login-session denylist in Redis (logout, theft,
`core.security.revoked_session_key`) and the accounts
in PostgreSQL (deactivation, and the token version that a password change, reset or role change
bumps).

Checking thousands of connections costs the event loop about 9 us each, so a process checks
them only when `access_epoch` has moved: it pairs the denylist's counter (bumped with each
revocation, `core.security.deny_session`) with the accounts' and memberships' counter (bumped
at commit by triggers, `AccessEpoch`). Both are read in two cheap round trips.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.reads import ReadConnection
from app.core.security import REVOKED_SESSIONS_EPOCH_KEY, revoked_session_key
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
    # One MGET, not one EXISTS per session: a pipeline of 200 EXISTS cost the event loop 2.5 ms
    # to pack and parse, every few seconds for every few hundred streams (bench.realtime).
    marks = await redis.mget([revoked_session_key(session_id) for session_id in session_ids])
    revoked = {sid for sid, mark in zip(session_ids, marks, strict=True) if mark is not None}
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


async def access_epoch(redis: Redis, connection: ReadConnection) -> tuple[int, int]:
    """Where revocations and account changes stand: a value that differs from an earlier one
    means a login session may have ended, or an account or a membership changed, in between.

    Read before a re-check, it tells the next look whether anything happened since that
    re-check read its data (a change committed in between moves it again). Raises on a Redis or
    database outage."""
    denied = await redis.get(REVOKED_SESSIONS_EPOCH_KEY)
    changed = await UserQueries(connection).access_epoch()
    return int(denied or 0), changed
