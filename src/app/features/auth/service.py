"""The account life cycle: registration, login, sessions and their refresh tokens, email flows.

A login starts a *session*: a `LoginSession` row whose id is the `sid` of each of its tokens.
Each refresh token is stored as the SHA-256 of its `jti`; refreshing locks the session row,
consumes the token atomically and issues the next one of the session. Presenting a consumed
token again (past a short grace window) means two parties hold the session (the token was
stolen or leaked): the whole session is revoked, in PostgreSQL and, for its access tokens, in
Redis until the last of them expires. Password changes, resets, deactivation and role
changes bump the user's `token_version` instead, which every token carries: all of the user's
tokens fail at once (and their sessions and reset links are revoked too).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.database import session_scope, utcnow, uuid7
from app.core.email import queue_email
from app.core.errors import ServiceUnavailableError
from app.core.logging import get_logger
from app.core.ratelimit import RateLimiter, email_identity, rate_limited
from app.core.security import (
    InvalidTokenError,
    Passwords,
    TokenClaims,
    Tokens,
    deny_session,
    digest,
    new_secret,
    sealer_for,
)
from app.features.auth.errors import (
    AccountDisabledError,
    InvalidCredentialsError,
    InvalidEmailTokenError,
    InvalidRefreshTokenError,
    WrongPasswordError,
)
from app.features.auth.models import EmailTokenPurpose
from app.features.auth.repository import (
    EmailTokenRepository,
    LoginSessionRepository,
    RefreshTokenRepository,
)
from app.features.auth.schemas import IssuedTokens
from app.features.users.models import User
from app.features.users.service import UserService

log = get_logger(__name__)

FAILED_LOGIN_SCOPE = "failed-login"


class LoginSessions:
    """Ending login sessions in PostgreSQL (their access tokens are denied in Redis by
    `AuthService`).

    `UserService` takes one (as its `LoginRevoker`) for every credential change it makes, so
    that users never import auth.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.login_sessions = LoginSessionRepository(session)
        self.refresh_tokens = RefreshTokenRepository(session)
        self.email_tokens = EmailTokenRepository(session)

    async def revoke_all(self, user_id: uuid.UUID) -> int:
        """Revoke every refresh token of every login session of the user, and void its reset
        links.

        Called on every credential change (password change or reset, role change,
        deactivation): a reset link mailed before it must not undo it. Access tokens are
        killed by the bump of `token_version` that goes with this call.
        """
        await self.email_tokens.expire_for_user(user_id, EmailTokenPurpose.reset_password)
        await self.login_sessions.revoke_user(user_id)
        return await self.refresh_tokens.revoke_user(user_id)

    async def revoke(self, session_id: uuid.UUID) -> int:
        """End one login session: its row first (this waits for a refresh holding its lock to
        commit), then every refresh token it has, the one that refresh just issued included.
        Returns how many tokens were revoked."""
        await self.login_sessions.revoke(session_id)
        return await self.refresh_tokens.revoke_session(session_id)


class AuthService:
    def __init__(
        self,
        session: AsyncSession,
        *,
        settings: Settings,
        passwords: Passwords,
        tokens: Tokens,
        redis: Redis,
        limiter: RateLimiter,
        session_factory: async_sessionmaker[AsyncSession],
    ) -> None:
        self.session = session
        self.settings = settings
        self.passwords = passwords
        self.tokens = tokens
        self.redis = redis
        self.limiter = limiter
        self.session_factory = session_factory
        self.users = UserService(session)
        self.logins = LoginSessions(session)
        self.refresh_tokens = RefreshTokenRepository(session)
        self.email_tokens = EmailTokenRepository(session)

    # Registration and verification

    async def register(self, *, email: str, password: str, full_name: str) -> User:
        password_hash = await self.passwords.hash(password)
        user = await self.users.create(
            email=email, password_hash=password_hash, full_name=full_name
        )
        await self._send_verification(user)
        log.info("auth.registered", user_id=str(user.id))
        return user

    async def resend_verification(self, user: User) -> None:
        if user.is_verified:
            log.info("auth.verification_not_resent", user_id=str(user.id), reason="verified")
            return
        await self._send_verification(user)

    async def verify_email(self, token: str) -> None:
        token_hash = digest(token)
        user_id = await self.email_tokens.consume(EmailTokenPurpose.verify_email, token_hash)
        if user_id is not None:
            user = await self.users.require(user_id)
            await self.users.mark_verified(user)
            return
        # The same link opened twice (mail scanners do that) is not an error once it worked.
        known = await self.email_tokens.find(EmailTokenPurpose.verify_email, token_hash)
        if known is not None and known.used_at is not None:
            owner = await self.users.get(known.user_id)
            if owner is not None and owner.is_verified:
                return
        raise InvalidEmailTokenError

    async def _send_verification(self, user: User) -> None:
        token = await self._issue_email_token(
            user, EmailTokenPurpose.verify_email, self.settings.verify_email_token_ttl_seconds
        )
        await queue_email(
            self.session,
            to=user.email,
            template="verify_email",
            context={"full_name": user.full_name},
            secret_context={"link": self._link("verify-email", token)},
            sealer=sealer_for(self.settings),
        )
        log.info("auth.verification_queued", user_id=str(user.id))

    # Passwords

    async def forgot_password(self, email: str) -> None:
        """Queue a reset link for a known, active account; the caller cannot tell which it was.

        Both branches look the user up and make a token; only a real account stores it and
        queues the mail (two small INSERTs in the same transaction).
        """
        user = await self.users.get_by_email(email)
        token = new_secret()
        token_hash = digest(token)
        if user is None or not user.is_active:
            log.info("auth.reset_not_sent")
            return
        await self.email_tokens.add(
            user_id=user.id,
            purpose=EmailTokenPurpose.reset_password,
            token_hash=token_hash,
            expires_at=utcnow() + timedelta(seconds=self.settings.reset_password_token_ttl_seconds),
        )
        await queue_email(
            self.session,
            to=user.email,
            template="reset_password",
            context={"full_name": user.full_name},
            secret_context={"link": self._link("reset-password", token)},
            sealer=sealer_for(self.settings),
        )
        log.info("auth.reset_queued", user_id=str(user.id))

    async def reset_password(self, *, token: str, new_password: str) -> None:
        user_id = await self.email_tokens.consume(EmailTokenPurpose.reset_password, digest(token))
        if user_id is None:
            raise InvalidEmailTokenError
        user = await self.users.get(user_id)
        if user is None or not user.is_active:
            raise InvalidEmailTokenError
        # Every session ends, and every other reset link is used up with this one.
        await self.users.set_password(
            user, await self.passwords.hash(new_password), logins=self.logins
        )
        await self._send_password_notice(user)
        log.info("auth.password_reset", user_id=str(user.id))

    async def change_password(
        self, user: User, *, current_password: str, new_password: str
    ) -> IssuedTokens:
        """A new password; every earlier token fails and the caller gets a new session.

        The current password is checked like a login's (same per-account bucket, counted
        before the verify): this route is no unlimited password oracle for a stolen token.
        """
        await self._admit_password_attempt(user.email)
        if not await self.passwords.verify(user.password_hash, current_password):
            raise WrongPasswordError
        await self._clear_password_attempts(user.email)
        await self.users.set_password(
            user, await self.passwords.hash(new_password), logins=self.logins
        )
        issued = await self._start_session(user)
        await self._send_password_notice(user)
        log.info("auth.password_changed", user_id=str(user.id), session_id=str(issued.session_id))
        return issued

    async def _send_password_notice(self, user: User) -> None:
        await queue_email(
            self.session,
            to=user.email,
            template="password_changed",
            context={"full_name": user.full_name},
        )

    # Login and sessions

    async def login(self, *, email: str, password: str) -> IssuedTokens:
        """Tokens of a new session, or one answer for an unknown email and a wrong password."""
        await self._admit_password_attempt(email)
        user = await self.users.get_by_email(email)
        if user is None:
            valid = await self.passwords.verify_dummy(password)
        else:
            valid = await self.passwords.verify(user.password_hash, password)
        if user is None or not valid:
            log.info("auth.login_failed")
            raise InvalidCredentialsError
        # The right password: the attempt counted above is not a failure.
        await self._clear_password_attempts(email)
        if not user.is_active:
            log.info("auth.login_refused", user_id=str(user.id), reason="inactive")
            raise AccountDisabledError
        if self.passwords.needs_rehash(user.password_hash):
            await self.users.rehash_password(user, await self.passwords.hash(password))
            log.info("auth.password_rehashed", user_id=str(user.id))
        issued = await self._start_session(user)
        log.info("auth.logged_in", user_id=str(user.id), session_id=str(issued.session_id))
        return issued

    async def _admit_password_attempt(self, email: str) -> None:
        """Count a password attempt on the account *before* the verify, or 429 past the limit.

        One atomic Redis step (`RateLimiter.acquire`): of any burst, however wide, at most the
        limit's number of attempts reach argon2 per window. A verify that succeeds clears the
        count (`_clear_password_attempts`), so only failures add up. Login and the current
        password of a password change share this bucket, per normalized email.
        """
        if not self.limiter.enabled:
            return
        failures = self.limiter.item("rate_limit_failed_logins")
        admitted, window = await self.limiter.acquire(
            failures, FAILED_LOGIN_SCOPE, email_identity(email)
        )
        if not admitted:
            log.info("auth.login_locked")
            raise rate_limited(window)

    async def _clear_password_attempts(self, email: str) -> None:
        if self.limiter.enabled:
            failures = self.limiter.item("rate_limit_failed_logins")
            await self.limiter.clear(failures, FAILED_LOGIN_SCOPE, email_identity(email))

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        """The next pair of the token's session; the presented refresh token is used up.

        The session row is locked first (`SELECT ... FOR UPDATE`), so a logout or a reuse
        detection of the same session runs entirely before or entirely after this refresh:
        before, and its `revoked_at` refuses this refresh; after, and it revokes the pair this
        refresh issues (in PostgreSQL and, for the access token, in Redis).

        The same refresh token presented again within `APP_REFRESH_REUSE_GRACE_SECONDS` of its
        rotation (two tabs refreshing at once) gets the successor pair that was already issued,
        signed again byte for byte, as long as that pair is unused (RFC 9700, 4.14.2). Later,
        or once the successor was itself rotated, it is reuse: the session is revoked.
        """
        try:
            claims = self.tokens.decode(refresh_token, "refresh")
        except InvalidTokenError:
            raise InvalidRefreshTokenError from None
        locked = await self.logins.login_sessions.lock(claims.session_id)
        if locked is None or locked.revoked or locked.user_id != claims.subject:
            raise InvalidRefreshTokenError
        jti_hash = digest(claims.jti)
        consumed = await self.refresh_tokens.consume(jti_hash)
        if consumed is None:
            replayed = await self._replay_in_grace(claims, jti_hash)
            if replayed is not None:
                return replayed
            await self._refuse_refresh(claims, jti_hash)
            raise InvalidRefreshTokenError
        user_id, session_id = consumed
        user = await self.users.get(user_id)
        if (
            user is None
            or user_id != claims.subject
            or session_id != claims.session_id
            or not user.is_active
            or user.token_version != claims.version
        ):
            raise InvalidRefreshTokenError
        issued = await self._issue(user, session_id, jti=self._successor_jti(claims.jti))
        log.info("auth.refreshed", user_id=str(user.id), session_id=str(session_id))
        return issued

    def _successor_jti(self, jti: str) -> str:
        return self.tokens.derive("refresh-successor", jti)

    async def _replay_in_grace(self, claims: TokenClaims, jti_hash: str) -> IssuedTokens | None:
        """The successor pair again, if `claims` names a token rotated within the grace window
        whose successor is still live; None otherwise (the caller treats it as reuse)."""
        grace = self.settings.refresh_reuse_grace_seconds
        if grace <= 0:
            return None
        known = await self.refresh_tokens.find(jti_hash)
        now = utcnow()
        if (
            known is None
            or known.used_at is None
            or known.revoked_at is not None
            or (now - known.used_at).total_seconds() > grace
        ):
            return None
        successor_jti = self._successor_jti(claims.jti)
        successor = await self.refresh_tokens.find(digest(successor_jti))
        if (
            successor is None
            or successor.used_at is not None
            or successor.revoked_at is not None
            or successor.expires_at <= now
        ):
            return None
        user = await self.users.get(known.user_id)
        if (
            user is None
            or not user.is_active
            or user.id != claims.subject
            or user.token_version != claims.version
        ):
            return None
        issued = self._sign_pair(
            user,
            known.session_id,
            jti=successor_jti,
            issued_at=int(successor.created_at.timestamp()),
        )
        log.info("auth.refresh_replayed", user_id=str(user.id), session_id=str(known.session_id))
        return issued

    async def _refuse_refresh(self, claims: TokenClaims, jti_hash: str) -> None:
        """A signed refresh token that is not live: if it was rotated already, end its session."""
        known = await self.refresh_tokens.find(jti_hash)
        if known is None or known.used_at is None or known.revoked_at is not None:
            return
        session_id, user_id = known.session_id, known.user_id  # the rollback expires `known`
        # The revocation must outlive this request, which fails (401) and rolls back, so it is
        # committed on its own, after this request's transaction (and its lock on the session
        # row) is rolled back: the revocation takes that lock in its turn.
        await self.session.rollback()
        async with session_scope(self.session_factory) as own:
            revoked = await LoginSessions(own).revoke(session_id)
        log.warning(
            "auth.refresh_reused",
            user_id=str(user_id),
            session_id=str(session_id),
            tokens_revoked=revoked,
        )
        try:
            await self._deny_access_tokens(session_id)
        except ServiceUnavailableError:
            log.error("auth.session_denylist_failed", session_id=str(session_id))

    async def logout(self, user: User, *, access: TokenClaims, refresh_token: str) -> None:
        """End the caller's session, and the refresh token's if it is another of theirs.

        Each session's row is locked by the revocation, so a refresh racing this logout either
        committed before (and its new pair is revoked here) or waits and is refused.
        """
        ended = {access.session_id}
        try:
            claims = self.tokens.decode(refresh_token, "refresh")
        except InvalidTokenError:
            claims = None
        if claims is not None and claims.subject == user.id:
            ended.add(claims.session_id)
        for session_id in sorted(ended):
            await self.logins.revoke(session_id)
            await self._deny_access_tokens(session_id)
            log.info("auth.logged_out", user_id=str(user.id), session_id=str(session_id))

    async def _deny_access_tokens(self, session_id: uuid.UUID) -> None:
        """Refuse the session's access tokens until the last one could have expired."""
        try:
            await deny_session(self.redis, session_id, self.tokens.access_ttl)
        except (RedisError, OSError):
            raise ServiceUnavailableError("Cannot end the session right now") from None

    async def _start_session(self, user: User) -> IssuedTokens:
        session_id = uuid7()
        await self.logins.login_sessions.add(session_id=session_id, user_id=user.id)
        return await self._issue(user, session_id, jti=new_secret())

    async def _issue(self, user: User, session_id: uuid.UUID, *, jti: str) -> IssuedTokens:
        issued = self._sign_pair(user, session_id, jti=jti, issued_at=int(time.time()))
        await self.refresh_tokens.add(
            user_id=user.id,
            session_id=session_id,
            jti_hash=digest(jti),
            issued_at=datetime.fromtimestamp(issued.issued_at, UTC),
            expires_at=datetime.fromtimestamp(issued.issued_at + self.tokens.refresh_ttl, UTC),
        )
        return issued

    def _sign_pair(
        self, user: User, session_id: uuid.UUID, *, jti: str, issued_at: int
    ) -> IssuedTokens:
        """The access and refresh token of one issue; the same arguments sign the same pair."""
        access, _ = self.tokens.encode(
            type="access",
            subject=user.id,
            session_id=session_id,
            version=user.token_version,
            role=user.role.value,
            jti=self.tokens.derive("access", jti)[:32],
            now=issued_at,
        )
        refresh, _ = self.tokens.encode(
            type="refresh",
            subject=user.id,
            session_id=session_id,
            version=user.token_version,
            jti=jti,
            now=issued_at,
        )
        return IssuedTokens(access, refresh, self.tokens.access_ttl, session_id, issued_at)

    # Helpers

    async def _issue_email_token(
        self, user: User, purpose: EmailTokenPurpose, ttl_seconds: int
    ) -> str:
        token = new_secret()
        await self.email_tokens.add(
            user_id=user.id,
            purpose=purpose,
            token_hash=digest(token),
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
        )
        return token

    def _link(self, page: str, token: str) -> str:
        return f"{self.settings.frontend_url.rstrip('/')}/{page}?{urlencode({'token': token})}"
