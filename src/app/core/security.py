"""Passwords (argon2id, off the event loop) and JWTs (python-jose, every claim required).

Both are built once per process from Settings (in the app's lifespan and the worker's start-up)
and reached through dependencies, never through module globals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request
from jose import JWTError, jwt
from redis.asyncio import Redis

from app.config import Settings
from app.core import memory

TokenType = Literal["access", "refresh"]
_T = TypeVar("_T")

_REQUIRED_CLAIMS = ("sub", "type", "jti", "iat", "exp", "iss", "aud")
_ALLOWED_HEADER = frozenset({"alg", "typ"})


# How much lower than the event loop the hashing threads run (Linux niceness, 0-19).
HASHING_NICENESS = 10


def _lower_thread_priority() -> None:
    """Run this thread (not the process) at a lower CPU priority, where the OS allows it.

    On Linux `setpriority` on a thread id applies to that thread alone. Hashing threads then
    yield the cores to the event loops whenever both want them: a burst of logins slows other
    logins down, never `/health` or a cached read (measured in bench/results).
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


TRIM_AFTER_IDLE_SECONDS = 5.0


class Passwords:
    """argon2id hashing in a thread pool of its own, with a bound on hashes in flight.

    argon2 holds the GIL-free C core for its whole run, so a thread pool keeps the event loop
    answering other requests; the semaphore keeps the memory (argon2_memory_kib per hash) and
    the queue of the thread pool bounded under a burst of logins. The pool's threads run at a
    lower priority than the event loop (`_lower_thread_priority`).
    """

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(settings.password_hash_concurrency)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.password_hash_concurrency,
            thread_name_prefix="argon2",
            initializer=_lower_thread_priority,
        )
        self._dummy_hash: str | None = None
        # Each hash takes argon2_memory_kib: from one malloc arena, given back to the system a
        # few seconds after the last hash (app.core.memory), not kept per thread for good.
        memory.limit_arenas()
        self._idle_trim = memory.IdleTrim(self._executor.submit, delay=TRIM_AFTER_IDLE_SECONDS)

    def close(self) -> None:
        self._idle_trim.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _in_pool(self, function: Callable[..., _T], *args: Any) -> _T:
        self._idle_trim.busy()
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, function, *args)
        finally:
            self._idle_trim.done()

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def hash(self, password: str) -> str:
        return await self._in_pool(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._in_pool(self._verify_sync, password_hash, password)

    async def verify_dummy(self, password: str) -> bool:
        """Spend what a real verify costs and fail: the answer for an unknown email.

        The dummy hash is made once per process with today's parameters, so the work is the
        same as verifying a real user's (current) hash.
        """
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
        await self.verify(self._dummy_hash, password)
        return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than today's settings."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


def digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret (refresh jti, emailed token): what the database keeps."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """256 random bits, URL-safe: a refresh token's jti or an emailed one-time token."""
    return secrets.token_urlsafe(32)


# The bearer credentials a request may carry: an access token (a JWT, below) or an
# organization's API key, told apart by this prefix. Whoever authenticates people must recognize
# a key without owning keys (organizations do), hence the prefix lives here.
API_KEY_PREFIX = "sk_"


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


# A logged-out (or stolen-and-revoked) login session's id is kept in Redis under this key until
# its last access token could have expired. Auth writes it (logout, a refresh token replayed);
# every authentication reads it, so it belongs to neither feature.
REVOKED_SESSION_KEY = "auth:revoked-session:{session_id}"


def revoked_session_key(session_id: uuid.UUID) -> str:
    return REVOKED_SESSION_KEY.format(session_id=session_id)


# Every session added to the denylist is also counted and appended to a capped stream, in the
# same transaction (`deny_session`): a process holding thousands of event streams reads which
# sessions were revoked since it last looked, instead of asking about each of its streams, and
# the count tells it whether the stream still holds all of them (`users.liveness`).
REVOKED_SESSIONS_COUNT_KEY = "auth:revoked-sessions:count"
REVOKED_SESSIONS_STREAM = "auth:revoked-sessions:stream"
REVOKED_SESSIONS_STREAM_LENGTH = 10_000


async def deny_session(redis: Redis, session_id: uuid.UUID, ttl_seconds: int) -> None:
    """Refuse the login session's access tokens for `ttl_seconds` (their lifetime)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(revoked_session_key(session_id), "1", ex=ttl_seconds)
        pipe.incr(REVOKED_SESSIONS_COUNT_KEY)
        pipe.xadd(
            REVOKED_SESSIONS_STREAM,
            {"session": str(session_id)},
            maxlen=REVOKED_SESSIONS_STREAM_LENGTH,
            approximate=True,
        )
        await pipe.execute()


class InvalidTokenError(Exception):
    """A JWT that is malformed, forged, expired, of the wrong type or missing a claim."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: uuid.UUID
    type: TokenType
    jti: str
    session_id: uuid.UUID
    version: int
    role: str | None
    issued_at: int
    expires_at: int


# How many verified tokens `Tokens` remembers: about 1 KB each.
_VERIFIED_TOKENS = 4096


class Tokens:
    """Encode and decode this API's JWTs: one algorithm allowed, every claim required."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.jwt_secret.get_secret_value()
        self._algorithm = settings.jwt_algorithm
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self.access_ttl = settings.access_token_ttl_seconds
        self.refresh_ttl = settings.refresh_token_ttl_seconds
        # Tokens verified lately, by their text: a client sends the same access token with
        # every request of its life, and its signature and claims need checking once (the
        # decode was a sixth of a short read's CPU). A hit still has its expiry checked here;
        # the session's revocation and the account's version are the caller's, every time.
        # Only valid tokens are kept (a refusal raises, and lru_cache keeps no exception).
        self._verified = functools.lru_cache(maxsize=_VERIFIED_TOKENS)(self._verify)

    def encode(
        self,
        *,
        type: TokenType,
        subject: uuid.UUID,
        session_id: uuid.UUID,
        version: int,
        role: str | None = None,
        jti: str | None = None,
        now: int | None = None,
    ) -> tuple[str, TokenClaims]:
        issued_at = int(time.time()) if now is None else now
        ttl = self.access_ttl if type == "access" else self.refresh_ttl
        claims = TokenClaims(
            subject=subject,
            type=type,
            jti=jti or uuid.uuid4().hex,
            session_id=session_id,
            version=version,
            role=role,
            issued_at=issued_at,
            expires_at=issued_at + ttl,
        )
        payload: dict[str, Any] = {
            "sub": str(subject),
            "type": type,
            "jti": claims.jti,
            "sid": str(session_id),
            "ver": version,
            "iat": issued_at,
            "exp": claims.expires_at,
            "iss": self._issuer,
            "aud": self._audience,
        }
        if role is not None:
            payload["role"] = role
        return jwt.encode(payload, self._key, algorithm=self._algorithm), claims

    def derive(self, label: str, value: str) -> str:
        """A secret derived from `value` with the signing key (HMAC-SHA256, URL-safe base64).

        Deterministic, so what it names can be made again from `value` alone: the successor
        of a refresh token (its `jti`) and the `jti` of the access token issued with it.
        Without the key it cannot be computed or told from a random secret.
        """
        mac = hmac.new(self._key.encode(), f"{label}:{value}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def decode(self, token: str, expected_type: TokenType) -> TokenClaims:
        """The token's claims, or InvalidTokenError whatever is wrong with it (`_verify`)."""
        claims = self._verified(token, expected_type)
        # As python-jose judges `exp` (whole seconds, no leeway), for a token verified before.
        if claims.expires_at < int(time.time()):
            raise InvalidTokenError("ExpiredSignatureError")
        return claims

    def _verify(self, token: str, expected_type: TokenType) -> TokenClaims:
        """The token's claims, or InvalidTokenError whatever is wrong with it.

        The header may name nothing but our one algorithm (and `typ`): a token that carries
        its own key or points at one (`jwk`, `jku`, `kid`, `x5u`, `x5c`...) or asks for other
        processing (`crit`) is refused before its signature is looked at, whatever a library
        would make of those members.
        """
        try:
            header = jwt.get_unverified_header(token)
        except JWTError:
            raise InvalidTokenError("malformed header") from None
        if header.get("alg") != self._algorithm or not set(header) <= _ALLOWED_HEADER:
            raise InvalidTokenError("header not allowed")
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                # python-jose accepts a token without `exp` or `aud` unless told to require them.
                options={f"require_{claim}": True for claim in _REQUIRED_CLAIMS if claim != "type"}
                | {"verify_aud": True, "verify_iss": True, "verify_exp": True, "leeway": 0},
            )
        except JWTError as exc:
            raise InvalidTokenError(type(exc).__name__) from None
        if payload.get("type") != expected_type:
            raise InvalidTokenError("wrong token type")
        try:
            return TokenClaims(
                subject=uuid.UUID(str(payload["sub"])),
                type=expected_type,
                jti=str(payload["jti"]),
                session_id=uuid.UUID(str(payload["sid"])),
                version=int(payload["ver"]),
                role=str(payload["role"]) if "role" in payload else None,
                issued_at=int(payload["iat"]),
                expires_at=int(payload["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidTokenError("malformed claims") from None


class Sealer:
    """Authenticated encryption (Fernet) with a key derived from `APP_JWT_SECRET` (HKDF).

    For what must wait somewhere at rest but acts as a credential: the links of queued emails
    (a reset link is a password). The outbox row keeps the sealed text; only a process holding
    the secret (the worker, at send time) can open it. Changing the secret makes rows sealed
    before unreadable: their emails then fail rather than go out with a link that the new
    secret could not have issued anyway.
    """

    def __init__(self, settings: Settings) -> None:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"saas-backend outbox seal v1"
        ).derive(settings.jwt_secret.get_secret_value().encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, values: dict[str, str]) -> str:
        import json

        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def unseal(self, sealed: str) -> dict[str, str]:
        """The sealed values; `InvalidTokenError` if altered or sealed with another key."""
        import json

        from cryptography.fernet import InvalidToken

        try:
            values: dict[str, str] = json.loads(self._fernet.decrypt(sealed.encode()))
        except (InvalidToken, ValueError):
            raise InvalidTokenError("cannot unseal") from None
        return values


_SEALERS: dict[str, Sealer] = {}


def sealer_for(settings: Settings) -> Sealer:
    """The `Sealer` of these settings' secret, built once per secret (the HKDF runs once)."""
    secret = settings.jwt_secret.get_secret_value()
    sealer = _SEALERS.get(secret)
    if sealer is None:
        sealer = _SEALERS[secret] = Sealer(settings)
    return sealer


async def get_passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


async def get_tokens(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
TokensDep = Annotated[Tokens, Depends(get_tokens)]
