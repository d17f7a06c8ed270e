"""Whether the login sessions behind long-lived connections still hold, checked for many at
once.

A request is authenticated once (`users.deps`); a connection that stays open (the event
streams) must stop when its login session ends. This applies the same rules to a whole
process's connections in two round trips: the login-session denylist in Redis (logout, theft,
`core.security.revoked_session_key`) and the accounts
in PostgreSQL (deactivation, and the token version that a password change, reset or role change
bumps).

Checking thousands of connections costs the event loop about 9 us each, so a process asks
`access_changes` what changed since it last looked: which sessions were denied (a capped
stream that `core.security.deny_session` appends to, with a count that tells whether the
stream still holds every denial since), and whether any account or membership changed (the
`access_epoch` counter that triggers move at commit, `AccessEpoch`). Two cheap round trips.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from app.core.reads import ReadConnection
from app.core.security import (
    REVOKED_SESSIONS_COUNT_KEY,
    REVOKED_SESSIONS_STREAM,
    revoked_session_key,
)
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


# At most this many revocations are read per look; more since the last look: re-check all.
_DENIALS_PER_LOOK = 1000


@dataclass(frozen=True, slots=True)
class AccessMarks:
    """Where revocations and account changes stood at one look."""

    denied_count: int  # how many sessions had been denied (REVOKED_SESSIONS_COUNT_KEY)
    denied_last: str  # the stream id of the last denial read ("0-0": none)
    accounts: int  # `access_epoch`: moved by every change of an account's access or membership


@dataclass(frozen=True, slots=True)
class AccessChanges:
    """What changed since an earlier look: the sessions denied since, by id, and whether that
    is all that changed (`complete`). When it is not (an account or a membership changed, the
    stream was cut or Redis lost it, or there is no earlier look), every connection must be
    re-checked."""

    marks: AccessMarks
    denied: frozenset[uuid.UUID]
    complete: bool


async def access_changes(
    redis: Redis, connection: ReadConnection, since: AccessMarks | None
) -> AccessChanges:
    """The changes since `since` (None: everything may have changed), in two round trips: one to
    Redis (the denials' count and the stream past the last one read, read together), one to
    PostgreSQL (`access_epoch`). Raises on a Redis or database outage.

    The marks are read before any re-check that they lead to: a change committed after it
    moves them again, so the next look sees it."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(REVOKED_SESSIONS_COUNT_KEY)
        if since is None:
            pipe.xrevrange(REVOKED_SESSIONS_STREAM, count=1)
        else:
            # From the last id read, inclusive (an exclusive start needs Redis 6.2); it is
            # dropped below. One more than the cap, so that a full read can be told apart.
            pipe.xrange(REVOKED_SESSIONS_STREAM, min=since.denied_last, count=_DENIALS_PER_LOOK + 1)
        count_raw, entries = await pipe.execute()
    accounts = await UserQueries(connection).access_epoch()
    count = int(count_raw or 0)
    if since is None:
        last = entries[0][0].decode() if entries else "0-0"
        return AccessChanges(AccessMarks(count, last, accounts), frozenset(), complete=False)
    new = [(raw_id.decode(), fields) for raw_id, fields in entries]
    new = [(entry_id, fields) for entry_id, fields in new if entry_id != since.denied_last]
    last = new[-1][0] if new else since.denied_last
    denied = frozenset(uuid.UUID(fields[b"session"].decode()) for _, fields in new)
    complete = (
        accounts == since.accounts
        and count - since.denied_count == len(new)
        and len(new) <= _DENIALS_PER_LOOK
    )
    return AccessChanges(AccessMarks(count, last, accounts), denied, complete)
